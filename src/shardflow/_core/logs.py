"""Log records that say where they come from: ``stream`` and ``shard`` as ``extra``.

Modules log through :func:`get_logger` (a ``logging.LoggerAdapter`` of
``logging.getLogger("shardflow.<area>")``), which adds the fields of the current context
to each record's ``extra`` (``record.stream``, ``record.shard``, ``record.app``...) unless
the call gives its own. A task sets them with :func:`push` (and :func:`pop`) around the
tasks it starts: anyio and asyncio tasks copy the context they are started in, so a
shard reader's lines carry its stream and shard, a producer's sender's its stream. Only
records that are emitted pay (LoggerAdapter checks the level first).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, TypeVar, cast

__all__ = ["fields", "get_logger", "pop", "push", "with_fields"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

_NONE: Mapping[str, str] = MappingProxyType({})
_fields: ContextVar[Mapping[str, str]] = ContextVar("shardflow_log_fields", default=_NONE)


class _Adapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        fields = _fields.get()
        if fields:
            extra = kwargs.get("extra")
            kwargs["extra"] = {**fields, **extra} if extra else fields
        return msg, kwargs


def get_logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """``logging.getLogger(name)`` whose records carry the context's fields as extra."""
    return _Adapter(logging.getLogger(name), {})


def push(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add ``fields`` (None: left out) to what this context's log records carry; undo
    with :func:`pop`."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _fields.set(merged)


def pop(token: Token[Mapping[str, str]]) -> None:
    _fields.reset(token)


def fields() -> Mapping[str, str]:
    """The fields this context's log records carry."""
    return _fields.get()


def with_fields(fields: Callable[[Any], Mapping[str, str | None]]) -> Callable[[_F], _F]:
    """Decorate an async method (e.g. ``__aenter__``) so that it runs, and the tasks it
    starts run, with ``fields(self)`` in their log records."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            token = push(**fields(self))
            try:
                return await method(self, *args, **kwargs)
            finally:
                pop(token)

        return cast(_F, wrapper)

    return decorate
