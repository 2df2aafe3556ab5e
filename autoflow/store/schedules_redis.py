"""Trigger records (schedules, database triggers) in the Redis store.

Three keys per kind, all with the store's global hash tag: bodies and versions (hashes)
and the wake index (a sorted set). A write is one Lua compare-and-set over the three.
"""

from __future__ import annotations

from importlib import resources

from autoflow.store.redis import RedisStore
from autoflow.store.redis_reads import _guard, _s

__all__ = ["RedisTriggerStore"]


class RedisTriggerStore:
    """See :class:`autoflow.store.schedules.TriggerStore`.

    Example::

        records = RedisTriggerStore(RedisStore.from_url("redis://localhost:6379/0"))
        records.due_records("schedule", time.time(), 100)
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.url = store.url
        self.r = store.r
        lua = resources.files("autoflow.store").joinpath("lua").joinpath("trigger_put.lua").read_text()
        self._put = self.r.register_script(lua)

    def _k(self, kind: str) -> list[str]:
        return [self.store._g(f"trig:{kind}:{part}") for part in ("body", "ver", "wake")]

    @_guard
    def put_record(self, kind: str, id: str, body: str, *, version: int | None, wake_at: float | None) -> int | None:
        args = [id, body, "" if version is None else str(version), "" if wake_at is None else repr(float(wake_at))]
        made = int(self._put(keys=self._k(kind), args=args))
        return made or None

    @_guard
    def get_record(self, kind: str, id: str) -> tuple[str, int] | None:
        body_key, ver_key, _ = self._k(kind)
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(body_key, id)
        pipe.hget(ver_key, id)
        body, version = pipe.execute()
        return None if body is None or version is None else (_s(body), int(version))

    @_guard
    def list_records(self, kind: str) -> list[tuple[str, int]]:
        body_key, ver_key, _ = self._k(kind)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(body_key)
        pipe.hgetall(ver_key)
        bodies, versions = pipe.execute()
        out = []
        for key in sorted(bodies, key=_s):
            if key in versions:
                out.append((_s(bodies[key]), int(versions[key])))
        return out

    @_guard
    def delete_record(self, kind: str, id: str) -> bool:
        body_key, ver_key, wake_key = self._k(kind)
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(body_key, id)
        pipe.hdel(ver_key, id)
        pipe.zrem(wake_key, id)
        return bool(pipe.execute()[0])

    @_guard
    def due_records(self, kind: str, now: float, limit: int) -> list[str]:
        found = self.r.zrangebyscore(self._k(kind)[2], "-inf", now, start=0, num=limit)
        return [_s(x) for x in found]

    @_guard
    def next_wake(self, kind: str) -> float | None:
        first = self.r.zrange(self._k(kind)[2], 0, 0, withscores=True)
        return float(first[0][1]) if first else None
