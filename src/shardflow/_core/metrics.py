"""Metrics through the OpenTelemetry API (the optional ``otel`` extra), resolved once.

:func:`meter` turns a class's ``meter_provider=`` option into a :class:`Meter`, or None
when no provider was given and OpenTelemetry is not installed: then nothing of it is
imported and the class keeps a None it checks once per request or batch, never per
record. Most instruments are observable: their callbacks read counters the library
keeps anyway (``stats()``), so they cost nothing until a reader collects them.

Names follow OpenTelemetry's conventions: ``shardflow.<area>.<thing>``, the unit in the
instrument (``{record}``, ``By``, ``s``, ``ms``), low-cardinality attributes only
(``aws.kinesis.stream``, ``aws.kinesis.shard``, ``error.type``, ``shardflow.app``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .aws import stream_name as stream_name

__all__ = [
    "APP",
    "ERROR",
    "SHARD",
    "STREAM",
    "Meter",
    "Observable",
    "Reading",
    "attr",
    "by_key",
    "check_provider",
    "meter",
    "size",
    "stat",
    "stream_name",
]

STREAM = "aws.kinesis.stream"
SHARD = "aws.kinesis.shard"
ERROR = "error.type"
APP = "shardflow.app"

Attributes = Mapping[str, str]
Reading = Callable[[Any], Iterable[tuple[float, Attributes]]]
"""Reads an owner: (value, extra attributes) pairs."""



class Observable(NamedTuple):
    """One observable instrument: what it reports and how it reads its owner. Each area
    declares its instruments as a table of these and registers an owner with
    :meth:`Meter.observe`."""

    kind: str
    """``counter``, ``updown`` or ``gauge``."""
    name: str
    unit: str
    description: str
    read: Reading


_VERSION = "0.1.0"

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Bucket bounds for request durations (OpenTelemetry's HTTP semantic conventions)."""
COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


_meters: weakref.WeakKeyDictionary[Any, Meter] = weakref.WeakKeyDictionary()


def check_provider(meter_provider: object) -> None:
    """Refuse at construction what is not a MeterProvider (TypeError)."""
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(
            "meter_provider must be an OpenTelemetry MeterProvider (with get_meter), "
            f"got {type(meter_provider).__name__}"
        )


def meter(meter_provider: object = None) -> Meter | None:
    """shardflow's meter of ``meter_provider``, else of OpenTelemetry's global provider;
    None when neither is there (OpenTelemetry not installed: nothing imported)."""
    check_provider(meter_provider)
    if meter_provider is None:
        try:
            from opentelemetry import metrics
        except ImportError:
            return None
        meter_provider = metrics.get_meter_provider()
    try:
        found = _meters.get(meter_provider)
    except TypeError:  # a provider that cannot be weakly referenced: not cached
        return Meter(meter_provider.get_meter("shardflow", _VERSION))  # type: ignore[attr-defined]
    if found is None:
        found = _meters[meter_provider] = Meter(
            meter_provider.get_meter("shardflow", _VERSION)  # type: ignore[attr-defined]
        )
    return found


class _Observed:
    """One observable instrument of one meter, reporting every owner registered with it
    (OpenTelemetry keeps the callbacks of an instrument's first registration only)."""

    def __init__(self, observation: Any) -> None:
        self._observation = observation
        # owners held weakly (a dropped object stops reporting), in a plain dict that a
        # collecting thread can copy in one step
        self.owners: dict[weakref.ref[Any], list[tuple[Reading, dict[str, str]]]] = {}

    def add(self, owner: object, read: Reading, attributes: dict[str, str]) -> None:
        self.owners.setdefault(weakref.ref(owner, self._gone), []).append((read, attributes))

    def _gone(self, ref: weakref.ref[Any]) -> None:
        self.owners.pop(ref, None)

    def __call__(self, options: Any) -> list[Any]:
        out = []
        observation = self._observation
        # (a periodic reader collects from its own thread: copy the dict in one step)
        for ref, readings in list(self.owners.items()):
            owner = ref()
            if owner is None:
                continue
            for read, base in list(readings):
                for value, extra in read(owner):
                    out.append(observation(value, {**base, **extra} if extra else base))
        return out


_KINDS = {
    "counter": "create_observable_counter",
    "updown": "create_observable_up_down_counter",
    "gauge": "create_observable_gauge",
}


class Meter:
    """shardflow's OpenTelemetry meter of one provider (one per provider: see
    :func:`meter`), creating each instrument once; every object that reports registers
    with it."""

    def __init__(self, otel_meter: Any) -> None:
        self.otel = otel_meter
        self._observed: dict[str, _Observed] = {}
        self._instruments: dict[str, Any] = {}

    def observe(
        self, owner: object, instruments: Iterable[Observable], attributes: Mapping[str, str]
    ) -> None:
        """Report each instrument's ``read(owner)`` at each collection while ``owner``
        lives (held weakly: a closed, dropped object stops reporting)."""
        base = dict(attributes)
        for kind, name, unit, description, read in instruments:
            observed = self._observed.get(name)
            if observed is None:
                from opentelemetry.metrics import Observation

                observed = self._observed[name] = _Observed(Observation)
                getattr(self.otel, _KINDS[kind])(
                    name, callbacks=[observed], unit=unit, description=description
                )
            observed.add(owner, read, base)

    def counter(self, name: str, unit: str, description: str) -> Any:
        found = self._instruments.get(name)
        if found is None:
            found = self._instruments[name] = self.otel.create_counter(
                name, unit=unit, description=description
            )
        return found

    def histogram(
        self, name: str, unit: str, description: str, buckets: Sequence[float] = SECONDS
    ) -> Any:
        """A histogram with ``buckets`` advised (default: for durations in seconds)."""
        found = self._instruments.get(name)
        if found is None:
            found = self._instruments[name] = self.otel.create_histogram(
                name, unit=unit, description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )
        return found

    def recorder(
        self,
        name: str,
        unit: str,
        description: str,
        attributes: Mapping[str, str],
        buckets: Sequence[float] = SECONDS,
    ) -> Callable[[float], None]:
        """A function recording one value in the histogram ``name`` with ``attributes``
        (the per-event hooks: a request's, a checkpoint's, an object's duration)."""
        record = self.histogram(name, unit, description, buckets).record
        attrs = dict(attributes)

        def observe(value: float) -> None:
            record(value, attrs)

        return observe


def stat(field: str) -> Reading:
    """A reading of one field of ``owner.stats()``."""

    def read(owner: Any) -> Iterable[tuple[float, Attributes]]:
        return ((getattr(owner.stats(), field), {}),)

    return read


def by_key(read_map: Callable[[Any], Mapping[str, float]], attribute: str) -> Reading:
    """A reading of a mapping (e.g. counts by error code), one point per key."""

    def read(owner: Any) -> Iterable[tuple[float, Attributes]]:
        return [(value, {attribute: key}) for key, value in read_map(owner).items()]

    return read


def attr(name: str) -> Reading:
    """A reading of the owner's attribute ``name`` (a number)."""

    def read(owner: Any) -> Iterable[tuple[float, Attributes]]:
        return ((getattr(owner, name), {}),)

    return read


def size(name: str) -> Reading:
    """A reading of how many items the owner's attribute ``name`` holds."""

    def read(owner: Any) -> Iterable[tuple[float, Attributes]]:
        return ((len(getattr(owner, name)), {}),)

    return read
