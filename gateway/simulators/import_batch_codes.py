"""import_batch error codes, as this simulator answers them.

The vendor doc (`seeds/003_*`) shows the `error` / `error_text` fields but
publishes no code list, so these are the simulator's own. Every body has a
top-level `error` and `error_text`; per-profile results repeat the pair.

Request-level (the whole request failed; no `result`):

| code | name                 | HTTP | meaning                                             |
|------|----------------------|------|-----------------------------------------------------|
| 0    | OK                   | 200  | Successful operation (per-profile errors may exist) |
| 1    | INVALID_REQUEST      | 400  | body is not a JSON object                           |
| 2    | MISSING_PARAMETER    | 400  | token, db_id, data, or field_name (custom matching) |
| 3    | INVALID_PARAMETER    | 400  | a parameter of the wrong type, unknown `matching`   |
| 4    | INVALID_TOKEN        | 401  | token is not this account's                         |
| 5    | DATABASE_NOT_FOUND   | 404  | no database with this `db_id`                       |
| 6    | TOO_MANY_PROFILES    | 413  | more than `max_profiles` items in `data`            |
| 7    | REQUEST_TOO_LARGE    | 413  | body larger than `max_bytes`                        |
| 8    | RATE_LIMITED         | 429  | throttle fault; honour `Retry-After`                |
| 9    | INTERNAL_ERROR       | 500  | error fault                                         |
| 10   | SERVICE_UNAVAILABLE  | 503  | outage fault                                        |
| 11   | TIMEOUT              | 504  | timeout fault (after the hang)                      |

Per profile (HTTP 200, in `result[i]`; all permanent: resending the same data
gets the same answer):

| code | name                   | meaning                                               |
|------|------------------------|-------------------------------------------------------|
| 101  | INVALID_PROFILE        | the data item is not an object                        |
| 102  | MATCHING_FIELD_MISSING | the item lacks the field its matching mode needs      |
| 103  | INVALID_EMAIL          | `email` is not an email address                       |
| 104  | INVALID_PHONE          | `phone` / `phones[]` not E.164 (`+` and 7-15 digits)  |
| 105  | PROFILE_NOT_FOUND      | matching by profile_id, and no such profile           |
| 106  | UNKNOWN_FIELD          | the item names a field the database does not have     |
| 107  | UNKNOWN_MATCHING_FIELD | `field_name` is not a custom field of the database    |
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    OK = 0
    INVALID_REQUEST = 1
    MISSING_PARAMETER = 2
    INVALID_PARAMETER = 3
    INVALID_TOKEN = 4
    DATABASE_NOT_FOUND = 5
    TOO_MANY_PROFILES = 6
    REQUEST_TOO_LARGE = 7
    RATE_LIMITED = 8
    INTERNAL_ERROR = 9
    SERVICE_UNAVAILABLE = 10
    TIMEOUT = 11
    INVALID_PROFILE = 101
    MATCHING_FIELD_MISSING = 102
    INVALID_EMAIL = 103
    INVALID_PHONE = 104
    PROFILE_NOT_FOUND = 105
    UNKNOWN_FIELD = 106
    UNKNOWN_MATCHING_FIELD = 107


SUCCESS_TEXT = "Successful operation"

# Per-profile codes, for an adapter that maps them to permanent failures.
PROFILE_ERRORS = frozenset(
    {
        ErrorCode.INVALID_PROFILE,
        ErrorCode.MATCHING_FIELD_MISSING,
        ErrorCode.INVALID_EMAIL,
        ErrorCode.INVALID_PHONE,
        ErrorCode.PROFILE_NOT_FOUND,
        ErrorCode.UNKNOWN_FIELD,
        ErrorCode.UNKNOWN_MATCHING_FIELD,
    }
)
