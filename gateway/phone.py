"""Phone numbers to E.164 with their region, or None when not a valid number.

On the accept path this was most of the event loop's time (issue 18's profile:
phonenumbers.parse about 25 us a number, over half of all validation), as
numbers are mostly distinct and a cache does not help. Most callers already
send E.164 (`+4930...`): for those, `_parse_e164` does only what `parse` does
for such a string (take the country calling code, strip a national prefix
where the rest is still a possible length, note Italian leading zeros) using
phonenumbers' own steps, in about a quarter of the time. Anything else (spaces,
a national number with `country_code`, letters) goes through `parse`.
tests/test_phone.py checks the two agree on every region's example numbers and
tens of thousands of variations of them.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
import phonenumbers.phonenumberutil as pu
from phonenumbers import PhoneMetadata, PhoneNumber

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Lengths after which parse() keeps a national prefix rather than stripping it:
# the stripped number would not be a possible length for the region.
_KEEP_PREFIX = (
    pu.ValidationResult.TOO_SHORT,
    pu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    pu.ValidationResult.INVALID_LENGTH,
)


def _parse_e164(phone: str) -> PhoneNumber | None:
    """What phonenumbers.parse(phone) gives for a strict E.164 string, or None
    where this shortcut does not apply (then `parse` decides)."""
    if not _E164.fullmatch(phone):
        return None
    country_code, national = pu._extract_country_code(phone[1:])
    if country_code == 0:
        return None
    region = pu.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    _, stripped, _ = pu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if pu._test_number_length(stripped, metadata) not in _KEEP_PREFIX:
        national = stripped
    if not pu._MIN_LENGTH_FOR_NSN <= len(national) <= pu._MAX_LENGTH_FOR_NSN:
        return None
    number = PhoneNumber(country_code=country_code)
    pu._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


def parse(phone: str, country_code: str | None) -> PhoneNumber | None:
    """The number as phonenumbers.parse reads it, or None where it cannot."""
    number = _parse_e164(phone)
    if number is not None:
        return number
    try:
        return phonenumbers.parse(phone, country_code)
    except (phonenumbers.NumberParseException, ValueError):
        return None


# A batch from one app often repeats a number (a shared switchboard, a household).
@functools.lru_cache(maxsize=4096)
def normalize(phone: str, country_code: str | None) -> tuple[str, str] | None:
    """`phone` in E.164 with its region, or None when it is not a valid number."""
    number = parse(phone, country_code)
    if number is None:
        return None
    # What `is_valid_number` does, without looking the region up a second time
    # for `phone_country`: that lookup walks every region sharing the calling code.
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region
