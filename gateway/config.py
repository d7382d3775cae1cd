"""Every setting, its environment variable and its default, in one place.

`Settings.from_env()` is the only reader of `os.environ`; everything else gets a
`Settings`. A setting's env variable is `GATEWAY_` + its name upper-cased. A
credential (SECRET_SETTINGS: tokens, keys, the database URL) may instead be in a
file that `GATEWAY_<NAME>_FILE` names, such as a mounted Kubernetes Secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from gateway.auth.tokens import Caller, TokenSpecError, parse_tokens
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.config_checks import (
    SECRET_SETTINGS,
    ConfigError,
    check_settings,
    convert_env,
    secret_files,
)
from gateway.crypto import KeyringError, Sealer
from gateway.quotas import UNLIMITED, AppQuotas, Quota, QuotaSpecError, parse_quotas
from gateway.schema import BACKENDS, LANES, Backend, Lane

# ConfigError lives beside the checks that raise it; callers import it from here.
__all__ = ["SECRET_SETTINGS", "ConfigError", "Settings", "describe"]


class Settings(msgspec.Struct, kw_only=True):
    # Inbound API
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # "app:token" (a writer) or "app:token:read+operate+erase", comma-separated;
    # see gateway/auth/tokens.py for the scopes.
    api_tokens: str = ""
    metrics_token: str = ""  # set: GET /metrics needs this bearer token
    # Failed authentication per client address: this many within the window
    # and the address gets 429 until the window ends (0: never throttled).
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    max_body_bytes: int = 5 * 1024 * 1024
    # Each app's default lane when a write names no `priority`:
    # "importer:bulk,crm:realtime"; an app not listed: realtime.
    app_lanes: str = ""
    # Per-app quotas on profile writes (gateway/quotas.py): "crm:1000/5000,shop:200"
    # (profiles per second / profiles at once; "app:unlimited" exempts one app);
    # the default covers apps not listed; empty: unlimited.
    app_quotas: str = ""
    app_quota_default: str = ""
    # Webhook bodies are read before their signature can be checked, so anyone
    # may send one: a small bound keeps unauthenticated memory small. An Omneo
    # profile context is a few KiB.
    webhook_max_body_bytes: int = 256 * 1024
    log_level: str = "INFO"

    # Connection limits of `gateway serve` (uvicorn). Past `limit_concurrency`
    # open connections or running requests a request is answered 503 at once.
    # A request head not complete `head_timeout` s after its first byte (or a
    # new connection that sends nothing) is closed; a body not received within
    # `body_read_timeout` s of its head is answered 408 and the connection closed;
    # an idle keep-alive connection is closed after `keep_alive_timeout` s.
    limit_concurrency: int = 1000
    head_timeout: float = 10.0
    body_read_timeout: float = 30.0
    keep_alive_timeout: float = 5.0

    # Store
    database_url: str = "sqlite:///gateway.db"
    store_batch_max: int = 256  # writes grouped into one commit
    migrate_on_start: bool = True  # off when `gateway migrate` runs as a deploy step
    store_pool_size: int = 10  # PostgreSQL connections per process (plus a few dedicated)

    # PII at rest (gateway/crypto.py): "id:base64key,..." (first one encrypts,
    # all decrypt); empty stores payloads in clear and warns at start.
    encryption_keys: str = ""
    # With keys set, a stored value in clear is refused (it could have been put
    # there by anyone with write access to the database) unless this migration
    # switch is on: set it while `gateway rotate-key` seals the rows stored
    # before a key was set, then turn it off.
    allow_plaintext_rows: bool = False
    # Payloads of writes whose deliveries all settled this long ago are removed
    # (states and ids stay); 0 keeps them for ever.
    retention_days: float = 30.0
    purge_interval: float = 3600.0  # seconds between retention purges

    # What each backend receives (gateway/mapping/): a TOML file, checked at
    # start; empty: the built-in mapping.
    mapping_file: str = ""

    # Backends: a backend is on when its URL is set.
    ocamba_url: str = ""
    ocamba_token: str = ""
    ocamba_rate_per_second: int = 10  # seeds/000, seeds/001: burst 10/s
    ocamba_rate_per_minute: int = 150  # steady 150/min
    ocamba_minute_window: float = 60.0  # the steady window's length, in seconds
    ocamba_max_in_flight: int = 4
    ocamba_import_batch_size: int = 100
    # Seconds a write to Ocamba waits before it is claimed, so the person's
    # updates within that span go as one merged call: Ocamba's 150 calls a
    # minute are the scarce thing, and its imports are queued there anyway.
    ocamba_settle: float = 2.0

    omneo_url: str = ""
    omneo_token: str = ""
    omneo_match_criteria: str = "email"
    omneo_batch_size: int = 500  # seeds/002: 1-500 profiles
    omneo_webhook_secret: str = ""
    omneo_webhook_signature_header: str = "X-Omneo-Hmac-SHA256"
    omneo_confirm_timeout: float = 15 * 60
    # Omneo and import_batch document no rate limit: 0 means none, only the cap
    # on calls in flight; set them if your account has one.
    omneo_rate_per_second: int = 0
    omneo_rate_per_minute: int = 0
    omneo_max_in_flight: int = 8
    omneo_settle: float = 0.0  # see ocamba_settle; Omneo takes 500 a call

    import_batch_url: str = ""
    import_batch_token: str = ""
    import_batch_db_id: int = 1
    import_batch_matching: str = "email"
    import_batch_batch_size: int = 1000  # vendor advises at most 10,000 and 10 MB
    import_batch_rate_per_second: int = 0
    import_batch_rate_per_minute: int = 0
    import_batch_max_in_flight: int = 8
    import_batch_settle: float = 0.0

    # Dispatcher
    dispatcher_enabled: bool = True  # off for API-only replicas
    workers_per_backend: int = 2
    # Besides those, workers per backend that claim only real-time writes, so
    # bulk batches held for minutes by a rate-limited backend's pacing cannot
    # keep every worker from a real-time write (README "Priority lanes").
    realtime_workers: int = 1
    # New work wakes workers at once (in-process, or LISTEN/NOTIFY on PostgreSQL);
    # the poll only finds retries whose time has come and expired leases.
    poll_interval: float = 0.5
    batch_linger: float = 0.2  # seconds a partial batch waits for company
    # Lanes (README "Delivery"): each backend's workers claim `realtime` before
    # `bulk`, except every Nth batch, which takes `bulk` first, so a steady
    # real-time stream cannot starve a backfill. 0: never bulk first (bulk
    # waits until no real-time write is due); 1: always bulk first.
    bulk_share: int = 5
    lease_seconds: float = 60.0
    max_attempts: int = 8
    retry_base: float = 1.0
    retry_cap: float = 300.0
    backend_timeout: float = 30.0
    shutdown_grace: float = 10.0  # seconds workers may finish their batch on stop
    # On SIGTERM, seconds /readyz answers 503 while requests are still served, so load
    # balancers take the process out before it stops accepting connections.
    shutdown_delay: float = 5.0
    # Circuit breaker per backend (gateway/dispatch/breaker.py): this many
    # batches in a row finding the backend down stop sending to it; a probe
    # goes after `breaker_cooldown` s, doubling per failed probe up to the max.
    # 5 lets a stray 5xx pass without tripping; a 1 s start makes a blip cost
    # about a second; a 30 s cap keeps a long outage to ~2 calls a minute and
    # notices the recovery within 30 s.
    breaker_failures: int = 5  # 0: never open
    breaker_cooldown: float = 1.0
    breaker_max_cooldown: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings, or ConfigError naming the variable and what is wrong.
        A credential (SECRET_SETTINGS) may come from the file GATEWAY_<NAME>_FILE names."""
        env = secret_files(os.environ if environ is None else environ)
        settings = cls(**convert_env(msgspec.structs.fields(cls), env))
        check_settings(settings)
        settings.api_token_map()  # fail at start, not on the first request
        settings.app_lane_map()
        settings.app_quotas_in_force()
        settings.sealer()
        return settings

    def sealer(self) -> Sealer:
        """The keyring from GATEWAY_ENCRYPTION_KEYS."""
        try:
            return Sealer.from_spec(self.encryption_keys, allow_plaintext=self.allow_plaintext_rows)
        except KeyringError as exc:
            raise ConfigError(str(exc)) from None

    def api_token_map(self) -> dict[str, Caller]:
        """token -> the app and its scopes, from GATEWAY_API_TOKENS."""
        try:
            return parse_tokens(self.api_tokens)
        except TokenSpecError as exc:
            raise ConfigError(f"GATEWAY_API_TOKENS: {exc}") from None

    def _apps(self) -> set[str]:
        return {caller.app for caller in self.api_token_map().values()}

    def app_lane_map(self) -> dict[str, Lane]:
        """app -> its default lane, from GATEWAY_APP_LANES (apps not listed: realtime)."""
        apps = self._apps()
        lanes: dict[str, Lane] = {}
        for position, item in enumerate((p.strip() for p in self.app_lanes.split(",")), 1):
            if not item:
                continue
            app, _, lane = (part.strip() for part in item.partition(":"))
            if not app or not lane:
                raise ConfigError(f"GATEWAY_APP_LANES: entry {position} is not app:lane")
            if app not in apps:
                raise ConfigError(
                    f"GATEWAY_APP_LANES: app {app!r} has no token in GATEWAY_API_TOKENS"
                )
            if app in lanes:
                raise ConfigError(f"GATEWAY_APP_LANES: app {app!r} is listed twice")
            if lane not in LANES:
                raise ConfigError(
                    f"GATEWAY_APP_LANES: app {app!r} has unknown lane {lane[:20]!r};"
                    f" lanes are {', '.join(LANES)}"
                )
            lanes[app] = lane  # narrowed to Lane by the check above
        return lanes

    def app_quotas_in_force(self, clock: Clock = SYSTEM_CLOCK) -> AppQuotas:
        """A token bucket per app with a quota (GATEWAY_APP_QUOTAS, else
        GATEWAY_APP_QUOTA_DEFAULT); none for the others."""
        apps = self._apps()
        try:
            quotas = parse_quotas(self.app_quotas, apps)
        except QuotaSpecError as exc:
            raise ConfigError(f"GATEWAY_APP_QUOTAS: {exc}") from None
        default: Quota | None = None
        if self.app_quota_default.strip() not in ("", UNLIMITED):
            try:
                default = Quota.parse(self.app_quota_default)
            except QuotaSpecError as exc:
                raise ConfigError(f"GATEWAY_APP_QUOTA_DEFAULT: {exc}") from None
        return AppQuotas(quotas, default, apps, clock)

    def configured_backends(self) -> list[Backend]:
        urls = {
            "ocamba": self.ocamba_url,
            "omneo": self.omneo_url,
            "import_batch": self.import_batch_url,
        }
        return [b for b in BACKENDS if urls[b]]

    def rate_limited_backends(self) -> list[Backend]:
        """Backends with a rate limit to respect in total across replicas: one
        process at a time sends to them (see Store.lead)."""
        limited = {
            "ocamba": True,  # documented: 10/s and 150/min per account
            "omneo": bool(self.omneo_rate_per_second or self.omneo_rate_per_minute),
            "import_batch": bool(
                self.import_batch_rate_per_second or self.import_batch_rate_per_minute
            ),
        }
        return [b for b in self.configured_backends() if limited[b]]

    def settle(self, backend: Backend) -> float:
        """Seconds a write to `backend` waits before it is claimed (Store.claim)."""
        return {
            "ocamba": self.ocamba_settle,
            "omneo": self.omneo_settle,
            "import_batch": self.import_batch_settle,
        }[backend]

    def rate_window(self, backend: Backend) -> float:
        """Length of the longest rate window of `backend`, in seconds."""
        return self.ocamba_minute_window if backend == "ocamba" else 60.0

    def sqlite_path(self) -> Path:
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            raise ConfigError(f"not an SQLite URL: {self.database_url!r}")
        return Path(self.database_url[len(prefix) :])


def describe() -> list[tuple[str, str]]:
    """(env variable, default) for every setting, for `--help` and the README."""
    return [
        ("GATEWAY_" + f.name.upper(), repr(f.default)) for f in msgspec.structs.fields(Settings)
    ]
