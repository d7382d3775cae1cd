"""How Omneo names a person: the email, or the identity its match_criteria names.

The batch adapter and the webhook receiver both use these, so a delivery and the
webhook that confirms it always agree on the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.mapping.values import source_value
from gateway.schema import NormalizedProfile


def match_key_of_profile(
    profile: NormalizedProfile,
    match_criteria: str,
    identities: Mapping[str, str] | None = None,
) -> str | None:
    """`identities`: the mapping file's handle -> source; a handle it names is
    read from that source, as the batch sends it, not from the profile's own."""
    if match_criteria == "email":
        return profile.email.lower() if profile.email else None
    source = (identities or {}).get(match_criteria)
    if source is not None:
        value = source_value(profile, source)
        identifier = None if value is None else str(value)
    else:
        identifier = (profile.identities or {}).get(match_criteria)
    return f"{match_criteria}:{identifier}" if identifier else None


def match_key_of_context(context: dict[str, Any], match_criteria: str) -> str | None:
    """The same key, read from a webhook's profile context."""
    if match_criteria == "email":
        email = context.get("email")
        return email.strip().lower() if isinstance(email, str) and email.strip() else None
    identities = context.get("identities")
    if not isinstance(identities, list):
        return None
    for identity in identities:
        if isinstance(identity, dict) and identity.get("handle") == match_criteria:
            identifier = identity.get("identifier")
            if identifier:
                return f"{match_criteria}:{identifier}"
    return None
