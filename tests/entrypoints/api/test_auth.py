"""The key check and the token bucket, as pure logic (the API tests cover them through HTTP)."""

import pytest

from llmrec.entrypoints.api.auth import KeyRing, RateLimiter
from llmrec.entrypoints.api.settings import ServiceSettings, key_digest


def test_keys_are_held_as_digests_and_matched_only_whole():
    settings = ServiceSettings(api_keys=" alpha-key , beta-key,,")
    assert settings.api_keys == tuple(sorted((key_digest("alpha-key"), key_digest("beta-key"))))
    assert "alpha-key" not in repr(settings) and "alpha-key" not in settings.model_dump_json()
    ring = KeyRing(settings.api_keys)
    assert ring.match("alpha-key") and ring.match("beta-key") and ring.match("alpha-key") != ring.match("beta-key")
    for wrong in ("alpha", "alpha-key ", "ALPHA-KEY", "", key_digest("alpha-key")):
        assert ring.match(wrong) is None
    assert not KeyRing(ServiceSettings(api_keys="").api_keys)


def test_the_bucket_allows_a_burst_then_one_request_per_refill():
    limiter = RateLimiter(per_minute=6)  # one token every 10 s, bursts of 6
    assert [limiter.take("k", now=0.0) for _ in range(6)] == [0.0] * 6
    assert limiter.take("k", now=0.0) == pytest.approx(10.0)
    assert limiter.take("k", now=4.0) == pytest.approx(6.0)
    assert limiter.take("k", now=10.0) == 0.0 and limiter.take("k", now=10.0) == pytest.approx(10.0)
    assert limiter.take("other", now=10.0) == 0.0  # one bucket per caller
    assert RateLimiter(per_minute=0).take("k") == 0.0  # 0: no limit


def test_full_buckets_are_forgotten_past_the_cap():
    limiter = RateLimiter(per_minute=60, max_buckets=10)
    for n in range(30):
        limiter.take(f"addr:{n}", now=float(n * 100))  # each earlier bucket has refilled by the next request
    assert len(limiter._buckets) <= 11
