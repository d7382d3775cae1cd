"""`GATEWAY_API_TOKENS`: apps, their tokens and what each token may do.

One entry per token, comma-separated: `app:token` or `app:token:scope+scope`.
A bare `app:token` is a writer (`write`), the form every deployment used before
scopes existed, so upgrading grants no one more than they had in mind for a
writer. The scopes:

- `write`: post profiles, read the requests its own app made, and read a
  profile's field names and delivery states (never its values);
- `read`: read profiles in full (decrypted values) and any app's requests;
- `operate`: dead letters, replay, and the operator page `/ui`;
- `erase`: erasure requests (`DELETE /v1/profiles/{external_id}`).
"""

from __future__ import annotations

import typing
from typing import Literal

import msgspec

Scope = Literal["write", "read", "operate", "erase"]
SCOPES: tuple[Scope, ...] = typing.get_args(Scope)
DEFAULT_SCOPES: frozenset[Scope] = frozenset({"write"})
# 32 characters of a random alphabet are far beyond guessing, even unthrottled.
MIN_TOKEN_LENGTH = 32
SYNTAX = "app:token or app:token:scope+scope (scopes: " + ", ".join(SCOPES) + ")"


class TokenSpecError(ValueError):
    """The token list is unusable; the message never contains a token."""


class Caller(msgspec.Struct, frozen=True):
    """An authenticated app and what its token may do."""

    app: str
    scopes: frozenset[Scope]

    def may(self, *scopes: Scope) -> bool:
        """Whether the token has any of `scopes`."""
        return any(scope in self.scopes for scope in scopes)


def parse_tokens(spec: str) -> dict[str, Caller]:
    """token -> Caller. Errors name the app (or the entry's position), never the token."""
    tokens: dict[str, Caller] = {}
    entries = [part.strip() for part in spec.split(",")]
    for position, item in enumerate(entries, 1):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0].strip() or not parts[1]:
            raise TokenSpecError(
                f"entry {position} is not {SYNTAX}; a token may not contain ':' or ','"
            )
        app, token = parts[0].strip(), parts[1]
        scopes = _scopes(app, parts[2]) if len(parts) == 3 else DEFAULT_SCOPES
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenSpecError(
                f"the token of app {app!r} is {len(token)} characters; use at least"
                f" {MIN_TOKEN_LENGTH} (`gateway generate-token` prints one)"
            )
        if token in tokens:
            raise TokenSpecError(f"app {app!r} has a token that another entry already uses")
        tokens[token] = Caller(app=app, scopes=scopes)
    return tokens


def _scopes(app: str, text: str) -> frozenset[Scope]:
    names = [name.strip() for name in text.split("+")]
    unknown = [name for name in names if name not in SCOPES]
    if unknown or not names:
        raise TokenSpecError(
            f"app {app!r} has unknown scope {unknown[0] if unknown else ''!r};"
            f" scopes are {', '.join(SCOPES)}, joined with '+'"
        )
    return frozenset(typing.cast(list[Scope], names))
