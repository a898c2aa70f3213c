"""Ready-made filters for :meth:`Collector.filter`: add fields, sample, redact.

Each helper returns a filter ``fn(event) -> event | None``. The collector hands filters
a private copy of the event, so these change it in place.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Any

from .._core.validate import shown
from .outputs import Event

__all__ = ["add_fields", "redact", "sample"]

REDACTED = "[REDACTED]"


def add_fields(
    fields: Mapping[str, Any] | None = None, /, *, overwrite: bool = False, **more: Any
) -> Callable[[Event], Event]:
    """A filter that adds ``fields`` (and keyword ``more``) to every event.

    A value that is callable is called with the event, per event (e.g. a hostname lookup
    or a derived field). Fields the event already has are kept unless ``overwrite``.
    """
    extra = {**(fields or {}), **more}
    for name in extra:
        if not isinstance(name, str) or not name:
            raise ValueError(f"field names must be non-empty strings, got {shown(name)}")

    def add(event: Event) -> Event:
        for name, value in extra.items():
            if overwrite or name not in event:
                event[name] = value(event) if callable(value) else value
        return event

    return add


def sample(
    fraction: float, *, seed: int | None = None, key: str | None = None
) -> Callable[[Event], Event | None]:
    """A filter that keeps about ``fraction`` of events (0.0 keeps none, 1.0 all).

    By default each event is kept at random; ``seed`` makes the sequence of decisions
    repeatable. With ``key`` (a field name, e.g. ``"user_id"``) the decision depends only
    on that field's value (and the seed): all events of a user are kept or dropped
    together, in every process. Events without the field are kept.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"fraction must be a number in [0, 1], got {shown(fraction)}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {shown(fraction)}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty field name or None, got {shown(key)}")
    if key is None:
        rng = random.Random(seed)

        def keep_random(event: Event) -> Event | None:
            return event if rng.random() < fraction else None

        return keep_random

    salt = b"" if seed is None else str(seed).encode()
    threshold = int(fraction * 2**64)

    def keep_by_key(event: Event) -> Event | None:
        value = event.get(key)
        if value is None:
            return event
        digest = hashlib.blake2b(salt + str(value).encode(), digest_size=8).digest()
        return event if int.from_bytes(digest, "big") < threshold else None

    return keep_by_key


def redact(
    *paths: str, replacement: Any = REDACTED, remove: bool = False
) -> Callable[[Event], Event]:
    """A filter that hides the named fields: ``redact("password", "user.email")``.

    A dotted path reaches into nested objects. Present fields are replaced by
    ``replacement`` (or deleted with ``remove=True``); missing ones are ignored.
    """
    if not paths:
        raise ValueError("redact() needs at least one field name")
    split: list[tuple[str, ...]] = []
    for path in paths:
        if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
            raise ValueError(f"invalid field path {shown(path)}: use names joined by '.'")
        split.append(tuple(path.split(".")))

    def hide(event: Event) -> Event:
        for parts in split:
            node: Any = event
            for part in parts[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
                if node is None:
                    break
            if isinstance(node, dict) and parts[-1] in node:
                if remove:
                    del node[parts[-1]]
                else:
                    node[parts[-1]] = replacement
        return event

    return hide
