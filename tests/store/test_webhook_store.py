"""Webhook events: stored once, applied once, never moving a delivery backwards."""

from __future__ import annotations

import time

import msgspec
import pytest

from gateway.schema import NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent


async def accepted_delivery(store: Store, external_id: str, email: str) -> int:
    await store.accept(
        NewRequest(
            request_id=f"r-{external_id}-{time.monotonic_ns()}",
            app="crm",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id=external_id, email=email)],
            received_at=time.time(),
        )
    )
    [claim] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(claim.delivery_id, "accepted", match_key=email)])
    return claim.delivery_id


def event(
    key: str | None, omneo_id: str = "1001", when: float | None = None, body: bytes = b"{}"
) -> WebhookEvent:
    return WebhookEvent(
        source="omneo",
        event="profile.created",
        body_hash=f"{key}-{omneo_id}-{when}-{body!r}",
        body=body,
        received_at=time.time(),
        backend_id=omneo_id,
        match_key=key,
        event_time=when,
    )


@pytest.mark.anyio
async def test_an_event_confirms_the_accepted_delivery_and_records_the_omneo_id(
    store: Store,
) -> None:
    delivery = await accepted_delivery(store, "a", "a@example.com")
    saved = await store.save_webhook(event("a@example.com"))
    assert not saved.duplicate
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    assert [c.delivery_id for c in applied.confirmations] == [delivery]
    assert applied.confirmations[0].lag >= 0
    view = await store.get_profile("a")
    assert view is not None
    assert view.backends["omneo"].state == "confirmed"
    assert view.backend_ids == {"omneo": "1001"}
    assert await store.apply_webhooks("omneo") == []  # applied once


@pytest.mark.anyio
async def test_the_same_event_twice_is_stored_once(store: Store) -> None:
    first = await store.save_webhook(event("x@example.com"))
    second = await store.save_webhook(event("x@example.com"))
    assert second.duplicate and second.event_id == first.event_id
    assert len(await store.apply_webhooks("omneo")) == 1


@pytest.mark.anyio
async def test_unmatched_events_are_kept(store: Store) -> None:
    await store.save_webhook(event("nobody@example.com"))
    await store.save_webhook(event(None, omneo_id="5"))
    results = [a.result for a in await store.apply_webhooks("omneo")]
    assert results == ["unmatched", "unmatched"]


@pytest.mark.anyio
async def test_an_older_event_than_one_applied_changes_nothing(store: Store) -> None:
    await accepted_delivery(store, "a", "a@example.com")
    await store.save_webhook(event("a@example.com", when=2000.0))
    await store.apply_webhooks("omneo")
    later = await accepted_delivery(store, "a", "a@example.com")
    await store.save_webhook(event("a@example.com", when=1000.0))
    [stale] = await store.apply_webhooks("omneo")
    assert stale.result == "stale"
    view = await store.get_profile("a")
    assert view is not None and view.backends["omneo"].state == "accepted"
    assert (await store.list_deliveries(["accepted"]))[0].delivery_id == later


@pytest.mark.anyio
async def test_an_event_never_confirms_a_delivery_accepted_after_it_arrived(
    store: Store,
) -> None:
    await store.save_webhook(event("a@example.com"))
    await accepted_delivery(store, "a", "a@example.com")
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "unmatched"


@pytest.mark.anyio
async def test_overdue_deliveries_become_unconfirmed_and_a_late_event_still_confirms(
    store: Store,
) -> None:
    delivery = await accepted_delivery(store, "a", "a@example.com")
    assert await store.mark_unconfirmed("omneo", accepted_before=time.time() - 60) == 0
    assert await store.mark_unconfirmed("omneo", accepted_before=time.time() + 1) == 1
    assert await store.count_state("omneo", "unconfirmed") == 1
    [listed] = await store.list_deliveries(["unconfirmed"])
    assert listed.delivery_id == delivery
    await store.save_webhook(event("a@example.com"))
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    assert await store.count_state("omneo", "unconfirmed") == 0
    assert await store.count_state("omneo", "confirmed") == 1


@pytest.mark.anyio
async def test_a_body_replayed_under_the_other_event_name_is_a_duplicate(store: Store) -> None:
    """Omneo's signature covers the body, not the URL: a captured profile.created
    body sent to /profile.updated is the same event, stored and applied once."""
    await accepted_delivery(store, "a", "a@example.com")
    created = event("a@example.com", body=b'{"id": 1001}')
    first = await store.save_webhook(created)
    assert not first.duplicate
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    later = await accepted_delivery(store, "a", "a@example.com")
    replayed = await store.save_webhook(
        msgspec.structs.replace(created, event="profile.updated", received_at=time.time())
    )
    assert replayed.duplicate and replayed.event_id == first.event_id
    assert await store.apply_webhooks("omneo") == []
    # The delivery Omneo never reported stays waiting for its own event.
    [waiting] = await store.list_deliveries(["accepted"])
    assert waiting.delivery_id == later


@pytest.mark.anyio
async def test_an_event_never_confirms_a_delivery_accepted_at_the_same_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: at)
        await accepted_delivery(store, "a", "a@example.com")
    await store.save_webhook(msgspec.structs.replace(event("a@example.com"), received_at=at))
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "unmatched"
    assert await store.count_state("omneo", "accepted") == 1


async def sent_and_stored_before_recorded(
    store: Store, monkeypatch: pytest.MonkeyPatch, received: list[float]
) -> tuple[int, float]:
    """A delivery claimed and sent at T, webhook events arriving at `received`
    (offsets from T) stored, and only then, at T + 0.05, its `accepted` result
    recorded: the order a loaded machine produces when Omneo answers the batch
    and sends its webhook before the dispatcher commits the result."""
    await store.accept(
        NewRequest(
            request_id=f"r-a-{time.monotonic_ns()}",
            app="crm",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id="a", email="a@example.com")],
            received_at=time.time(),
        )
    )
    sent_at = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: sent_at)
        [claim] = await store.claim("omneo", 10, "w", 60)
    for n, offset in enumerate(received):
        await store.save_webhook(
            msgspec.structs.replace(
                event("a@example.com", omneo_id=str(1001 + n)), received_at=sent_at + offset
            )
        )
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: sent_at + 0.05)
        result = DeliveryResult(
            claim.delivery_id, "accepted", match_key="a@example.com", sent_at=sent_at
        )
        assert await store.record("w", [result]) == 1
    return claim.delivery_id, sent_at


@pytest.mark.anyio
async def test_an_event_stored_before_the_result_is_recorded_still_confirms_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, _ = await sent_and_stored_before_recorded(store, monkeypatch, [0.01])
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    assert [c.delivery_id for c in applied.confirmations] == [delivery]
    # The lag runs from the call, not from when its result was written down.
    assert applied.confirmations[0].lag == pytest.approx(0.01, abs=1e-6)
    assert await store.count_state("omneo", "confirmed") == 1


@pytest.mark.anyio
async def test_an_event_received_before_or_as_the_call_was_sent_never_confirms_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sent_and_stored_before_recorded(store, monkeypatch, [-0.01, 0.0])
    results = [a.result for a in await store.apply_webhooks("omneo")]
    assert results == ["unmatched", "unmatched"]
    assert await store.count_state("omneo", "accepted") == 1


@pytest.mark.anyio
async def test_an_event_applied_while_the_call_is_in_flight_waits_for_its_result(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the applier meets on a loaded machine: the webhook is stored
    and applied at once, while the dispatcher has yet to record the answer."""
    await store.accept(
        NewRequest(
            request_id=f"r-a-{time.monotonic_ns()}",
            app="crm",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id="a", email="a@example.com")],
            received_at=time.time(),
        )
    )
    sent_at = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: sent_at)
        [claim] = await store.claim("omneo", 10, "w", 60)
    early = msgspec.structs.replace(event("a@example.com", "1000"), received_at=sent_at - 0.01)
    await store.save_webhook(early)
    await store.save_webhook(
        msgspec.structs.replace(event("a@example.com"), received_at=sent_at + 0.01)
    )
    # The one that came before the claim cannot be about it: settled at once.
    assert [a.result for a in await store.apply_webhooks("omneo")] == ["unmatched"]
    assert await store.apply_webhooks("omneo") == []  # the other still waits
    result = DeliveryResult(
        claim.delivery_id, "accepted", match_key="a@example.com", sent_at=sent_at
    )
    assert await store.record("w", [result]) == 1
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    assert [c.delivery_id for c in applied.confirmations] == [claim.delivery_id]
    assert await store.count_state("omneo", "confirmed") == 1


@pytest.mark.anyio
async def test_a_lapsed_lease_holds_no_event_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died mid-call never records its answer: past the lease,
    the event is settled as it stands."""
    await store.accept(
        NewRequest(
            request_id=f"r-a-{time.monotonic_ns()}",
            app="crm",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id="a", email="a@example.com")],
            received_at=time.time(),
        )
    )
    await store.claim("omneo", 10, "w", 0.01)
    await store.save_webhook(event("a@example.com"))
    with monkeypatch.context() as m:
        later = time.time() + 1
        m.setattr(time, "time", lambda: later)
        [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "unmatched"
