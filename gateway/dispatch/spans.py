"""The dispatcher's span around one backend call, `gateway.deliver` (README
"Tracing"), kept out of dispatcher.py so that the dispatcher only wraps the call.

A batch carries writes of many requests, each accepted in its caller's trace
(the traceparent stored with the write). The span links to each of those
traces; when the batch carries writes of one trace only, that trace is its
parent too, so a caller sees the delivery of its write in its own trace even
when another replica sends it minutes later. The adapter's HTTP calls
(`backend.send`, made in the transport's sender) are its children.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gateway import tracing
from gateway.backends.base import BackendAdapter, Item, Outcome
from gateway.schema import Backend
from gateway.store.base import Claim


async def deliver_traced(
    backend: Backend, adapter: BackendAdapter, claims: Sequence[Claim], items: Sequence[Item]
) -> list[Outcome]:
    """`adapter.deliver(items)` inside its span; exceptions go on as they were."""
    if not tracing.enabled():
        return await adapter.deliver(items)
    sent = {i.delivery_id for i in items}
    # Claims that were not handed to the adapter (unchanged, say) are not in this call.
    carried = [c for c in claims if c.delivery_id in sent]
    parent, links = tracing.joined(
        tp for c in carried for tp in (c.traceparent, *c.carried_traceparents)
    )
    lanes = sorted({c.lane for c in carried})
    attrs: tracing.Attrs = {
        "gateway.backend": backend,
        "gateway.deliveries": len(items),
        "gateway.lane": lanes[0] if len(lanes) == 1 else "mixed",
        "gateway.attempt": max((c.attempts for c in carried), default=None),
        "gateway.carried": sum(len(c.carries) for c in carried),
    }
    with tracing.span("gateway.deliver", attrs, parent=parent, links=links, root=True) as span:
        outcomes = await adapter.deliver(items)
        # Counts only: an outcome's error text may quote the profile.
        counts = Counter(o.state for o in outcomes)
        span.update({f"gateway.outcome.{state}": n for state, n in sorted(counts.items())})
        return outcomes
