"""Reading GATEWAY_* variables and checking them, so that `gateway serve`
stops on a bad setting with one line that names the variable and what is
wrong, before anything starts. Messages never echo a value that may be secret.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    from gateway.config import Settings

_KINDS = {int: "a whole number", float: "a number", bool: "true or false"}
# Numbers that mean nothing at zero; every other number may be 0 (often "off").
POSITIVE = frozenset(
    {
        "port",
        "workers",
        "max_body_bytes",
        "store_batch_max",
        "store_pool_size",
        "purge_interval",
        "ocamba_minute_window",
        "ocamba_max_in_flight",
        "ocamba_import_batch_size",
        "omneo_batch_size",
        "omneo_max_in_flight",
        "import_batch_batch_size",
        "import_batch_max_in_flight",
        "workers_per_backend",
        "poll_interval",
        "lease_seconds",
        "max_attempts",
        "backend_timeout",
        "auth_failure_window",
        "webhook_max_body_bytes",
        "limit_concurrency",
        "head_timeout",
        "body_read_timeout",
        "keep_alive_timeout",
    }
)
# Each backend's URL, and the credential it refuses calls without.
BACKEND_CREDENTIALS = {
    "ocamba_url": "ocamba_token",
    "omneo_url": "omneo_token",
    "import_batch_url": "import_batch_token",
}
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
# Settings that hold a credential: each may instead be read from a file named by
# GATEWAY_<NAME>_FILE (a mounted Secret), so it need not be an environment variable.
SECRET_SETTINGS = (
    "api_tokens",
    "metrics_token",
    "encryption_keys",
    "database_url",
    "ocamba_token",
    "omneo_token",
    "omneo_webhook_secret",
    "import_batch_token",
)
FILE_SUFFIX = "_FILE"
MIN_SECRET_LENGTH = 32
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting is present but unusable; the message names the variable."""


def var(name: str) -> str:
    return "GATEWAY_" + name.upper()


def secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with each GATEWAY_<SECRET>_FILE replaced by GATEWAY_<SECRET> holding
    the file's contents (one trailing newline stripped). Both set, or a file that
    cannot be read, is a ConfigError naming the variable, never the contents."""
    out = dict(env)
    for name in SECRET_SETTINGS:
        file_var = var(name) + FILE_SUFFIX
        if file_var not in env:
            continue
        if var(name) in env:
            raise ConfigError(f"{var(name)} and {file_var} are both set; set one of them")
        path = env[file_var]
        if not path:
            raise ConfigError(f"{file_var} is empty; it must name a file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{file_var}: {path} is not UTF-8 text") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{file_var}: cannot read {path} ({reason})") from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        del out[file_var]
        out[var(name)] = text
    return out


def convert_env(
    fields: Iterable[msgspec.structs.FieldInfo], env: Mapping[str, str]
) -> dict[str, Any]:
    """Each present variable converted to its setting's type, one at a time,
    so that an error names the variable rather than a path into a struct."""
    values: dict[str, Any] = {}
    for field in fields:
        name = var(field.name)
        if name not in env:
            continue
        text = env[name]
        try:
            # strict=False lets "8080" become an int and "0.5" a float.
            value = msgspec.convert(text, field.type, strict=False)
        except msgspec.ValidationError:
            kind = _KINDS.get(field.type, "text")
            raise ConfigError(f"{name} must be {kind}, not {text[:40]!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, not {text[:40]!r}")
        values[field.name] = value
    return values


def check_settings(settings: Settings) -> None:
    """What the types alone do not say: ranges, URLs, credentials that go together."""
    for field in msgspec.structs.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if field.name in POSITIVE and value <= 0:
            raise ConfigError(f"{var(field.name)} must be more than 0, not {value}")
        if value < 0:
            raise ConfigError(f"{var(field.name)} must be 0 or more, not {value}")
    if settings.port > 65535:
        raise ConfigError(f"GATEWAY_PORT must be a TCP port (1 to 65535), not {settings.port}")
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    _check_database_url(settings.database_url)
    for url_field, token_field in BACKEND_CREDENTIALS.items():
        url = getattr(settings, url_field)
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{var(url_field)} must be an http:// or https:// URL with a host,"
                " such as https://api.example.com"
            )
        if not getattr(settings, token_field):
            raise ConfigError(
                f"{var(token_field)} is empty but {var(url_field)} is set:"
                " the backend refuses calls without it"
            )
    if settings.metrics_token and len(settings.metrics_token) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"GATEWAY_METRICS_TOKEN is {len(settings.metrics_token)} characters;"
            f" use at least {MIN_SECRET_LENGTH} (`gateway generate-token` prints one)"
        )


def _check_database_url(url: str) -> None:
    # The URL may carry a password: the message names its scheme only.
    if not url.startswith(DATABASE_SCHEMES):
        scheme = url.partition(":")[0][:20]
        raise ConfigError(
            f"GATEWAY_DATABASE_URL: scheme {scheme!r} is not supported; use"
            " sqlite:///path/to/file.db or postgresql://user@host:5432/database"
        )
    if url.startswith("sqlite:///"):
        if not url[len("sqlite:///") :]:
            raise ConfigError("GATEWAY_DATABASE_URL: sqlite:/// needs a file path after it")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"GATEWAY_DATABASE_URL is not a valid URL ({exc})") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError(
            "GATEWAY_DATABASE_URL names no host, such as postgresql://db:5432/gateway"
        )
