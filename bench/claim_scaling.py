"""How a dispatcher claim scales with the length of the queue.

Fills a fresh SQLite store with a small and a large backlog (3 backends per
profile) and times claims of 500 deliveries against each, in the same run.
The ratio large/small is the figure: near 1 means a claim costs the same
however far behind the backend is (it runs on the single writer thread, so a
slow claim would hold up every inbound write).

    .venv/bin/python bench/claim_scaling.py [--small 10000] [--large 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from gateway.schema import NormalizedProfile
from gateway.store.base import NewRequest
from gateway.store.sqlite import SQLiteStore

CLAIMS = 5
BATCH = 500


async def claim_ms(backlog: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "claim.db")
        await store.open()
        try:
            for i in range(backlog // 1000):
                await store.accept(
                    NewRequest(
                        request_id=f"r{i}",
                        app="bench",
                        targets=["ocamba", "omneo", "import_batch"],
                        profiles=[NormalizedProfile(external_id=f"p{i}-{j}") for j in range(1000)],
                        received_at=time.time(),
                    )
                )
            started = time.perf_counter()
            for _ in range(CLAIMS):
                claimed = await store.claim("omneo", BATCH, "bench", 60)
                assert len(claimed) == BATCH
            return (time.perf_counter() - started) / CLAIMS * 1000
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="profiles in the small backlog")
    parser.add_argument("--large", type=int, default=200_000, help="profiles in the large one")
    args = parser.parse_args()
    small = asyncio.run(claim_ms(args.small))
    large = asyncio.run(claim_ms(args.large))
    print(f"claim of {BATCH}: {small:.1f} ms with {args.small} queued,", end=" ")
    print(f"{large:.1f} ms with {args.large}")
    print(f"large / small: x{large / small:.2f}")


if __name__ == "__main__":
    main()
