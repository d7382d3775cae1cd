"""The E.164 shortcut reads every number as phonenumbers.parse does."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from gateway import phone

TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
)


def _verdict(number: phonenumbers.PhoneNumber | None) -> tuple[str, str] | None:
    if number is None:
        return None
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region


def _by_parse(text: str) -> tuple[str, str] | None:
    try:
        return _verdict(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return None


def _samples() -> list[str]:
    """Every region's example numbers, each with digits changed, a trunk 0
    inserted after the calling code, and random numbers behind every code."""
    rng = random.Random(18)
    found: list[str] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            found.append("+" + digits)
            for _ in range(8):
                keep = rng.randint(len(digits) // 2, len(digits) - 1)
                tail = "".join(rng.choice("0123456789") for _ in range(len(digits) - keep))
                found.append("+" + digits[:keep] + tail)
                cut = rng.randint(1, 3)
                found.append("+" + digits[:cut] + "0" + digits[cut:])
    for _ in range(5000):
        code = str(rng.randint(1, 999))
        rest = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 12)))
        found.append("+" + code + rest)
    return found


def test_the_shortcut_agrees_with_parse_wherever_it_applies() -> None:
    samples = _samples()
    taken = 0
    for text in samples:
        quick = phone._parse_e164(text)
        if quick is None:
            continue
        taken += 1
        assert _verdict(quick) == _by_parse(text), text
    assert taken > 0.9 * len(samples)  # the shortcut is the usual path, not a rare one


@pytest.mark.parametrize(
    "text, country, expected",
    [
        ("+49 30 1234567", None, ("+49301234567", "DE")),  # spaces: parse decides
        ("030 1234567", "DE", ("+49301234567", "DE")),  # national, with a country
        ("+49301234567", "FR", ("+49301234567", "DE")),  # the + number's own country
        ("+390612345678", None, ("+390612345678", "IT")),  # Italian leading zero kept
        ("+4930", None, None),  # too short
        ("+999123456789", None, None),  # no such calling code
        ("0301234567", None, None),  # national, and no country to read it in
    ],
)
def test_normalize(text: str, country: str | None, expected: tuple[str, str] | None) -> None:
    assert phone.normalize(text, country) == expected
