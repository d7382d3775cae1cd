"""The per-app token bucket and its settings (gateway/quotas.py), on a FakeClock."""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.quotas import AppQuotas, Quota, QuotaSpecError, TokenBucket, parse_quotas


def test_a_quota_is_a_rate_and_a_burst() -> None:
    assert Quota.parse("1000/5000") == Quota(1000.0, 5000)
    assert Quota.parse(" 0.5 / 3 ") == Quota(0.5, 3)
    # Without a burst: a second's worth, but at least one full batch (1000).
    assert Quota.parse("200") == Quota(200.0, 1000)
    assert Quota.parse("2500") == Quota(2500.0, 2500)
    assert Quota.parse("2500.5") == Quota(2500.5, 2501)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fast", "'fast' is not rate or rate/burst"),
        ("0", "the rate must be a number more than 0, not '0'"),
        ("nan", "the rate must be a number more than 0"),
        ("inf/10", "the rate must be a number more than 0"),
        ("10/0", "the burst must be a whole number of 1 or more, not '0'"),
        ("10/", "the burst must be a whole number of 1 or more, not ''"),
        ("10/1e3", "the burst must be a whole number of 1 or more, not '1e3'"),
    ],
)
def test_a_bad_quota_says_why(text: str, message: str) -> None:
    with pytest.raises(QuotaSpecError, match=message):
        Quota.parse(text)


def test_the_quota_list_names_only_apps_with_tokens_once() -> None:
    apps = {"crm", "shop", "ops"}
    assert parse_quotas("crm:1000/5000, shop:200,ops:unlimited,", apps) == {
        "crm": Quota(1000.0, 5000),
        "shop": Quota(200.0, 1000),
        "ops": None,
    }
    assert parse_quotas("", apps) == {}
    with pytest.raises(QuotaSpecError, match="app 'billing' has no token"):
        parse_quotas("billing:10", apps)
    with pytest.raises(QuotaSpecError, match="app 'crm' is listed twice"):
        parse_quotas("crm:10,crm:20", apps)
    with pytest.raises(QuotaSpecError, match="entry 2 is not app:rate"):
        parse_quotas("crm:10,shop", apps)
    with pytest.raises(QuotaSpecError, match="app 'shop': 'x' is not rate"):
        parse_quotas("shop:x", apps)


def test_the_bucket_starts_full_refuses_what_it_lacks_and_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(rate=10, burst=50), clock)
    assert bucket.take(50) is None
    assert bucket.tokens == 0
    # 1 profile needs 0.1 s: at least a whole second is asked for.
    assert bucket.take(1) == 1
    # 25 profiles at 10 a second: 2.5 s, rounded up.
    assert bucket.take(25) == 3
    assert bucket.tokens == 0  # a refusal takes nothing
    clock.advance(2.5)
    assert bucket.take(25) is None
    clock.advance(1000)
    assert bucket.tokens == 50  # never more than the burst
    assert bucket.take(20) is None
    assert bucket.take(31) == 1  # 30 left: one more comes in 0.1 s
    clock.advance(0.1)
    assert bucket.take(31) is None


def test_tokens_given_back_do_not_pass_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(rate=1, burst=5), clock)
    assert bucket.take(5) is None
    bucket.give_back(3)
    assert bucket.tokens == 3
    bucket.give_back(10)
    assert bucket.tokens == 5


def test_a_slow_rate_gives_a_long_retry_after() -> None:
    bucket = TokenBucket(Quota(rate=0.5, burst=2), FakeClock())
    assert bucket.take(2) is None
    assert bucket.take(2) == 4


def test_apps_get_their_own_quota_the_default_or_none() -> None:
    clock = FakeClock()
    apps = ["crm", "shop", "ops", "support"]
    quotas = AppQuotas(
        {"crm": Quota(100, 100), "ops": None}, default=Quota(1, 10), apps=apps, clock=clock
    )
    crm, shop = quotas.bucket("crm"), quotas.bucket("shop")
    assert crm is not None and crm.quota == Quota(100, 100)
    assert shop is not None and shop.quota == Quota(1, 10)
    assert quotas.bucket("ops") is None  # unlimited, in spite of the default
    support = quotas.bucket("support")
    assert support is not None and support is not shop  # one bucket per app
    assert shop.take(10) is None and shop.take(1) == 1
    assert support.take(10) is None
    unlimited = AppQuotas({}, None, apps, clock)
    assert unlimited.buckets == {}
