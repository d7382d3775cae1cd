"""The closing summary of an import: counts only, never row content."""

from __future__ import annotations

from pathlib import Path

from gateway.bulk_import.checkpoint import Counts


def render(
    *,
    title: str,
    counts: Counts,
    skipped: int,
    rows_this_run: int,
    elapsed: float | None,
    errors_path: Path | None,
    sent: bool = True,
) -> str:
    lines = [title, f"  rows read    {counts.rows_read:>12,}"]
    if skipped:
        lines.append(f"  skipped      {skipped:>12,}  (acknowledged in an earlier run)")
    accepted = f"  {'accepted' if sent else 'valid':<8}     {counts.accepted:>12,}"
    if counts.replayed:
        accepted += f"  ({counts.replayed:,} answered as replays of chunks sent before a stop)"
    lines.append(accepted)
    rejected = f"  rejected     {counts.rejected:>12,}"
    if counts.rejected and errors_path is not None:
        rejected += f"  -> {errors_path}"
    lines.append(rejected)
    if sent:
        lines.append(f"  chunks       {counts.chunks:>12,}")
    if elapsed is not None:
        rate = rows_this_run / elapsed if elapsed > 0 else 0.0
        lines.append(f"  elapsed      {elapsed:>12.1f} s  ({rate:,.0f} rows/s in this run)")
    return "\n".join(lines)
