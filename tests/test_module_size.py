"""Small modules with one job each: no module of the gateway over 400 lines."""

from __future__ import annotations

from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
LIMIT = 400


def test_no_gateway_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(GATEWAY)): len(path.read_text(encoding="utf-8").splitlines())
        for path in GATEWAY.rglob("*.py")
    }
    assert len(sizes) > 50  # the walk found the package
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
