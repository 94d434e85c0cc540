"""Fixtures for tests that need the project's services (Redis on 127.0.0.1)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def _keys_under(client: redis.Redis, prefix: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A raw client of the test Redis (db 0).

    An unreachable server fails the test — unless CLM_SKIP_SERVICES=1, which skips it deliberately.
    """
    # No retries: an absent server should fail in milliseconds, not after redis-py's backoff.
    client = redis.Redis(
        host=REDIS_HOST,
        port=REDIS_PORT,
        db=0,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CLM_SKIP_SERVICES") == "1":
            pytest.skip(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable ({exc}); CLM_SKIP_SERVICES=1")
        pytest.fail(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}. Start it (redis-server ...) "
            "or set CLM_SKIP_SERVICES=1 to skip Redis tests deliberately"
        )
    yield client
    client.close()


@pytest.fixture
def redis_keys(redis_client: redis.Redis) -> Callable[[str], set[str]]:
    """`redis_keys(prefix)`: the names of all keys under `prefix:`."""
    return lambda prefix: _keys_under(redis_client, prefix)


@pytest.fixture
def redis_url(redis_client: redis.Redis) -> Iterator[str]:
    """`redis://…?prefix=…` with a prefix of the test's own; all its keys are removed afterwards."""
    prefix = f"clmtest-{uuid.uuid4().hex[:16]}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
    leftovers = _keys_under(redis_client, prefix)
    if leftovers:
        redis_client.unlink(*leftovers)
    remaining = _keys_under(redis_client, prefix)
    assert not remaining, f"{len(remaining)} Redis keys under {prefix}: survived the clean-up"
