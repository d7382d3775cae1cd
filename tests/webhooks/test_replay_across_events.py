"""A captured signed webhook replayed to the other event's URL, over the API."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store.base import DeliveryResult
from gateway.webhooks.applier import WebhookApplier
from tests.conftest import AUTH

SECRET = "replay-across-events-secret"
SIGNATURE = "X-Omneo-Hmac-SHA256"


def test_a_created_body_replayed_to_updated_is_a_duplicate_and_confirms_nothing(
    settings: Settings, rows: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    configured = msgspec.structs.replace(settings, omneo_webhook_secret=SECRET)
    app = create_app(configured)
    store = app.state.ctx.store
    body = b'{"id": 7002, "email": "twice@example.com", "updated_at": "2026-11-24T10:00:00Z"}'
    headers = {SIGNATURE: hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    profile = {"external_id": "t", "email": "twice@example.com", "targets": ["omneo"]}
    with TestClient(app) as client:
        applier = WebhookApplier(store, configured, app.state.ctx.metrics)

        def omneo_accepts() -> None:
            assert client.post("/v1/profiles", headers=AUTH, json=profile).status_code == 202
            [claim] = client.portal.call(store.claim, "omneo", 10, "w", 60)  # type: ignore[union-attr]
            accepted = DeliveryResult(claim.delivery_id, "accepted", match_key="twice@example.com")
            client.portal.call(store.record, "w", [accepted])  # type: ignore[union-attr]

        omneo_accepts()
        first = client.post("/v1/webhooks/omneo/profile.created", content=body, headers=headers)
        assert first.json()["status"] == "stored"
        client.portal.call(applier.run_once)  # type: ignore[union-attr]
        # A second write Omneo has not reported yet, then the replay.
        omneo_accepts()
        replay = client.post("/v1/webhooks/omneo/profile.updated", content=body, headers=headers)
        assert replay.status_code == 200
        assert replay.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
        client.portal.call(applier.run_once)  # type: ignore[union-attr]
    assert rows("SELECT state FROM deliveries ORDER BY id") == [("confirmed",), ("accepted",)]
    assert rows("SELECT COUNT(*) FROM webhook_events") == [(1,)]
