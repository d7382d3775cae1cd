from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import pytest

from gateway.webhooks.omneo import read_event, signature_ok

SECRET = "whsec-test"
BODY = b'{"id": 1001, "email": "Jane@Example.com", "updated_at": "2026-11-24T10:00:00Z"}'
DIGEST = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()


@pytest.mark.parametrize(
    "presented",
    [
        DIGEST.hex(),
        DIGEST.hex().upper(),
        base64.b64encode(DIGEST).decode(),
        "sha256=" + DIGEST.hex(),
    ],
)
def test_hex_and_base64_signatures_are_accepted(presented: str) -> None:
    assert signature_ok(SECRET, BODY, presented)


@pytest.mark.parametrize(
    ("secret", "body", "presented"),
    [
        (SECRET, BODY, None),
        (SECRET, BODY, ""),
        (SECRET, BODY, "not-a-signature"),
        (SECRET, BODY + b" ", DIGEST.hex()),  # tampered body
        ("other-secret", BODY, DIGEST.hex()),
        ("", BODY, hmac.new(b"", BODY, hashlib.sha256).hexdigest()),  # no secret configured
        (SECRET, BODY, DIGEST.hex()[:-2]),  # truncated
    ],
)
def test_bad_signatures_are_refused(secret: str, body: bytes, presented: str | None) -> None:
    assert not signature_ok(secret, body, presented)


def test_reading_an_event_by_email_and_by_identity() -> None:
    ev = read_event("profile.updated", BODY, "email", 5.0)
    assert (ev.backend_id, ev.match_key, ev.invalid) == ("1001", "jane@example.com", False)
    assert ev.event_time == dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC).timestamp()
    body = b'{"id": 7, "identities": [{"handle": "shopify_id", "identifier": "S-9"}]}'
    assert read_event("profile.created", body, "shopify_id", 0).match_key == "shopify_id:S-9"
    assert read_event("profile.created", body, "email", 0).match_key is None
    assert read_event("profile.created", b"[1, 2]", "email", 0).invalid
    assert read_event("profile.created", b"{nope", "email", 0).invalid
