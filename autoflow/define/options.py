"""Node options: :class:`NodeOptions` (every option of a node, in one place),
:class:`Backoff` between attempts, :class:`RateLimit` as parsed from ``rate_limit=``,
and :data:`ID_PATTERN`, the rule for node and workflow names.

``@af.node(...)`` and ``Node.with_options(...)`` build a :class:`NodeOptions`; the JSON
definition format reads and writes it with ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoflow.errors import WorkflowError
from autoflow.models import TriggerRule

__all__ = ["ID_PATTERN", "Backoff", "NodeOptions", "RateLimit"]

#: Node ids, node names and workflow names (the rule of the JSON definition format too):
#: a letter or underscore, then letters, digits, ``_``, ``.`` or ``-``; at most 128.
ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between attempts: ``base * factor**(attempt-1)``, capped at
    ``max`` seconds; with ``jitter`` the delay is drawn uniformly from [delay/2, delay].

    Example::

        @af.node(retries=3, backoff=af.Backoff(base=0.5, factor=2.0, max=60.0))
        def flaky() -> int: ...
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise WorkflowError(f"Backoff.{name} must be a finite number >= 0, got {value!r}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            raw = self.base * self.factor ** max(0, attempt - 1)
        except OverflowError:  # a huge factor or a late attempt: the cap applies
            raw = math.inf
        delay = min(self.max, raw) if self.base > 0 else 0.0
        if self.jitter:
            delay *= 0.5 + rand() / 2
        return delay

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class RateLimit:
    """A parsed rate limit: ``count`` calls per ``per`` seconds, shared under ``key``
    (None: the node's own key). Written ``"10/s"``, ``"100/m"``, ``"5/10s"``, or
    ``("api.example.com", "100/m")`` to share one budget between nodes."""

    key: str | None
    count: int
    per: float

    @classmethod
    def parse(cls, spec: str | tuple[str, str] | list[str]) -> RateLimit:
        key: str | None = None
        text = spec
        if isinstance(spec, (tuple, list)):
            if len(spec) != 2 or not all(isinstance(x, str) for x in spec) or not spec[0].strip():
                raise WorkflowError(f"rate_limit must be 'N/period' or (key, 'N/period'), got {spec!r}")
            key, text = spec[0], spec[1]
        match = _RATE.match(text) if isinstance(text, str) else None
        if not match or match.group(3) not in _PERIODS or int(match.group(1)) < 1:
            raise WorkflowError(
                f"rate_limit {spec!r} does not parse: write 'N/s', 'N/m', 'N/h', 'N/d' or 'N/10s' (N >= 1)"
            )
        multiple = float(match.group(2)) if match.group(2) else 1.0
        if multiple <= 0:
            raise WorkflowError(f"rate_limit {spec!r}: the period must be > 0")
        return cls(key, int(match.group(1)), multiple * _PERIODS[match.group(3)])


@dataclass(frozen=True)
class NodeOptions:
    """Every option of a node, in one place. Defaults follow the seed: 3 attempts."""

    name: str | None = None
    type: str | None = None
    retries: int = 2
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    priority: int = 0
    trigger: str = "all_success"
    rate_limit: str | tuple[str, str] | None = None
    concurrency: int | None = None
    retry_on: tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise WorkflowError(f"retries must be an int >= 0, got {self.retries!r}")
        timeout = self.timeout
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf
        ):
            raise WorkflowError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool) or abs(self.priority) > 1_000_000:
            raise WorkflowError(f"priority must be an int from -1000000 to 1000000, got {self.priority!r}")
        if not isinstance(self.backoff, Backoff):
            raise WorkflowError(f"backoff must be an af.Backoff, got {self.backoff!r}")
        try:
            object.__setattr__(self, "trigger", TriggerRule(self.trigger).value)
        except ValueError:
            rules = ", ".join(r.value for r in TriggerRule)
            raise WorkflowError(f"unknown trigger rule {self.trigger!r}; use one of {rules}") from None
        if isinstance(self.rate_limit, list):
            object.__setattr__(self, "rate_limit", tuple(self.rate_limit))
        if self.rate_limit is not None:
            RateLimit.parse(self.rate_limit)
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool) or self.concurrency < 1
        ):
            raise WorkflowError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        if isinstance(self.retry_on, (list, tuple)):
            object.__setattr__(self, "retry_on", tuple(self.retry_on))
        if self.retry_on is not None and (
            not isinstance(self.retry_on, tuple)
            or not self.retry_on
            or not all(
                (isinstance(x, str) and x) or (isinstance(x, int) and not isinstance(x, bool)) for x in self.retry_on
            )
        ):
            raise WorkflowError(
                "retry_on must be a non-empty list of exception type names, codes and HTTP status codes, "
                f"got {self.retry_on!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or not ID_PATTERN.match(self.name)):
            raise WorkflowError(
                f"name {self.name!r} is not a valid node name: use letters, digits, '_', '.' or '-', "
                "starting with a letter or '_' (at most 128 characters)"
            )
        kind = self.type
        valid_type = isinstance(kind, str) and kind.strip() and len(kind) <= 256 and kind.isprintable()
        if kind is not None and not valid_type:
            raise WorkflowError(f"type must be a non-empty printable str of at most 256 characters, got {self.type!r}")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def retries_error(self, exc: BaseException) -> bool:
        """Whether ``retry_on`` lets ``exc`` be retried: one of the names of its class (or
        of a base class) or its ``code``, or its ``status_code`` (HTTP). No ``retry_on``:
        every error may be retried."""
        if self.retry_on is None:
            return True
        names = {cls.__name__ for cls in type(exc).__mro__}
        code = getattr(exc, "code", None)
        if code is not None:
            names.add(str(code))
        status = getattr(exc, "status_code", None)
        return any((x in names) if isinstance(x, str) else (x == status) for x in self.retry_on)

    @property
    def rate(self) -> RateLimit | None:
        return None if self.rate_limit is None else RateLimit.parse(self.rate_limit)

    def to_dict(self) -> dict[str, Any]:
        """The options that differ from the defaults, as JSON (name/type excluded)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("name", "type"):
                continue
            value = getattr(self, f.name)
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if value != default:
                if isinstance(value, Backoff):
                    value = value.to_dict()
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "options") -> NodeOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise WorkflowError(f"{where}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("backoff"), Mapping):
            try:
                values["backoff"] = Backoff(**values["backoff"])
            except (TypeError, WorkflowError) as exc:
                raise WorkflowError(f"{where}.backoff: {exc}") from None
        try:
            return cls(**values)
        except WorkflowError as exc:
            raise WorkflowError(f"{where}: {exc}") from None
