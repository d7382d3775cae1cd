"""A client for the calling apps: `GatewayClient` (blocking) and
`AsyncGatewayClient` (asyncio), over httpx, typed with gateway.schema's structs.

    with GatewayClient("http://gateway:8080", token) as gw:
        accepted = gw.write(Profile(external_id="cust-42", email="jane@example.com"))
        gw.request_status(accepted.request_id)

- `write(profile, targets=None)` and `write_many(profiles, targets=None)`: every
  call gets an Idempotency-Key of its own (or `<idempotency_key>-<n>` per batch
  from a key you give), sent unchanged on each of its retries, so a retry after
  a lost answer is answered from the stored write, never stored twice.
  `write_many` splits the list into batches of at most 1000 (`MAX_BATCH`) and
  returns one `Accepted` per batch. Both take `priority="bulk"` (a backfill's
  lane) and `resend=True` (send what the backends already have).
- Retries (`RetryPolicy`): 408, 429, 502, 503, 504, timeouts and connection
  errors, with exponential backoff and jitter, or `Retry-After` when the
  gateway sends it. Any other answer that is not 2xx raises `GatewayError` at
  once, with the gateway's `ErrorBody`.
- `request_status(request_id)` -> `RequestView`; `profile_status(external_id)`
  -> `ProfileView` (read scope) or `ProfileSummary` (write or operate scope).

It imports the gateway's schema and view structs only, never the server.
"""

from gateway.client._async import AsyncGatewayClient
from gateway.client._core import GatewayError, PartialWriteError
from gateway.client._retry import RETRY_STATUSES, RetryPolicy
from gateway.client._sync import GatewayClient
from gateway.schema import MAX_BATCH, Accepted, ErrorBody, NormalizedProfile, Profile
from gateway.store.base import ProfileView, RequestView
from gateway.ui.profile_view import ProfileSummary

__all__ = [
    "MAX_BATCH",
    "RETRY_STATUSES",
    "Accepted",
    "AsyncGatewayClient",
    "ErrorBody",
    "GatewayClient",
    "GatewayError",
    "NormalizedProfile",
    "PartialWriteError",
    "Profile",
    "ProfileSummary",
    "ProfileView",
    "RequestView",
    "RetryPolicy",
]
