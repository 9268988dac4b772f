"""API keys and the per-key rate limit.

A request shows its key as `Authorization: Bearer <key>`. The service holds only the keys' sha256 digests
(`ServiceSettings.api_keys`); a presented key is hashed and compared with every digest by `hmac.compare_digest`,
so the comparison takes the same time whichever digest (if any) it matches. Keys are never logged: a caller is
named by `Caller.key_id`, a short digest of the key's digest. Writes and the chat need a key; reads need one only
when `open_reads` is off, and a key shown on a read must be valid.

The rate limit is a token bucket per key (anonymous reads: per client address): `rate_limit_per_minute` tokens a
minute, bursts of up to as many; an empty bucket answers 429 with `Retry-After` (whole seconds until a token).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from llmrec.entrypoints.api.errors import ApiError
from llmrec.entrypoints.api.settings import ServiceSettings, key_digest


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    """A short digest of the key's digest (safe to store and log); None for an anonymous read."""
    bucket: str


class KeyRing:
    def __init__(self, digests: tuple[str, ...]):
        self._digests = tuple(bytes.fromhex(d) for d in digests)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, key: str) -> str | None:
        """The key's id when it is one of ours, else None; every digest is compared (constant time each)."""
        presented = bytes.fromhex(key_digest(key))
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return hashlib.sha256(presented).hexdigest()[:16] if found else None


class RateLimiter:
    """A token bucket per caller; thread-safe."""

    def __init__(self, per_minute: int, max_buckets: int = 100_000):
        self.per_minute = per_minute
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket → (tokens, when)
        self._lock = threading.Lock()

    def take(self, bucket: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until the bucket holds a token again."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        rate, capacity = self.per_minute / 60.0, float(self.per_minute)
        with self._lock:
            tokens, then = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * rate)
            if tokens >= 1:
                self._buckets[bucket] = (tokens - 1, now)
                if len(self._buckets) > self.max_buckets:
                    self._prune(now, rate, capacity)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1 - tokens) / rate

    def _prune(self, now: float, rate: float, capacity: float) -> None:
        """Forget buckets that have refilled (they hold no state a new bucket would not)."""
        full = [b for b, (tokens, then) in self._buckets.items() if tokens + (now - then) * rate >= capacity]
        for bucket in full:
            del self._buckets[bucket]


class Auth:
    """The service's key check and rate limit, used by the routes as FastAPI dependencies (`writer`, `reader`)."""

    def __init__(self, settings: ServiceSettings):
        self.keys = KeyRing(settings.api_keys)
        self.open_reads = settings.open_reads
        self.limiter = RateLimiter(settings.rate_limit_per_minute)

    def authenticate(self, request: Request, required: bool) -> Caller:
        header = request.headers.get("authorization")
        if header is None:
            if required:
                hint = "" if self.keys else " (this service has no keys: set LLMREC_API_KEYS)"
                raise ApiError(401, f"this endpoint needs an API key: send 'Authorization: Bearer <key>'{hint}",
                               headers={"WWW-Authenticate": 'Bearer realm="llmrec"'})
            caller = Caller(None, "addr:" + (request.client.host if request.client else "unknown"))
        else:
            scheme, _, key = header.partition(" ")
            key_id = self.keys.match(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
            if key_id is None:
                raise ApiError(401, "the API key is not valid (send 'Authorization: Bearer <key>')",
                               headers={"WWW-Authenticate": 'Bearer realm="llmrec", error="invalid_token"'})
            caller = Caller(key_id, "key:" + key_id)
        wait = self.limiter.take(caller.bucket)
        if wait > 0:
            raise ApiError(429, f"rate limit of {self.limiter.per_minute} requests a minute reached; retry in {math.ceil(wait)} s",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return caller


async def writer(request: Request) -> Caller:
    """A dependency: the request must show a valid key."""
    return request.app.state.auth.authenticate(request, required=True)


async def reader(request: Request) -> Caller:
    """A dependency: a valid key, or none where reads are open."""
    auth: Auth = request.app.state.auth
    return auth.authenticate(request, required=not auth.open_reads)
