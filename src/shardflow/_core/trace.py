"""Optional trace spans through the OpenTelemetry API (the ``otel`` extra); off unless a
class is given ``tracer_provider=``.

A Producer makes one CLIENT span per PutRecords request (``Kinesis.PutRecords``), a
Consumer one per GetRecords request (``Kinesis.GetRecords``, with the shard); names and
attributes follow OpenTelemetry's conventions for AWS SDK calls (``rpc.system`` aws-api,
``rpc.service`` Kinesis, ``rpc.method``), plus ``aws.kinesis.stream`` /
``aws.kinesis.shard`` and ``error.type`` on failure. :func:`traceparent` is what the
Collector (``trace_context=True``) puts in each event: the W3C ``traceparent`` of the
span current at ``post()``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .. import errors
from . import logs as _logs
from .metrics import ERROR, SHARD

__all__ = ["on_request_span", "traced_call", "traceparent", "tracer"]

_VERSION = "0.1.0"
_RPC = {"rpc.system": "aws-api", "rpc.service": "Kinesis"}
INSTALL_HINT = "pip install 'shardflow[otel]'"


def tracer(tracer_provider: object) -> Any | None:
    """shardflow's tracer of ``tracer_provider``; None (no spans) when it is None.
    Raises TypeError for an object that is not a TracerProvider."""
    if tracer_provider is None:
        return None
    get = getattr(tracer_provider, "get_tracer", None)
    if not callable(get):
        raise TypeError(
            "tracer_provider must be an OpenTelemetry TracerProvider (with get_tracer), "
            f"got {type(tracer_provider).__name__}"
        )
    return get("shardflow", _VERSION)


def _error(span: Any, code: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(ERROR, code)
    span.set_status(Status(StatusCode.ERROR, code))


def on_request_span(
    tracer: Any, method: str, attributes: Mapping[str, str],
    then: Callable[[float, str | None], None] | None,
) -> Callable[[float, str | None], None]:
    """A request hook (duration, error code) that records a span of the request that just
    ended (its start computed from the duration), then calls ``then``."""
    from opentelemetry.trace import SpanKind

    name = f"Kinesis.{method}"
    attrs = {**_RPC, "rpc.method": method, **attributes}

    def hook(duration: float, error: str | None) -> None:
        if then is not None:
            then(duration, error)
        end = time.time_ns()
        span = tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attrs, start_time=end - int(duration * 1e9)
        )
        if error is not None:
            _error(span, error)
        span.end(end_time=end)

    return hook


def traced_call(
    tracer: Any,
    call: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
    attributes: Mapping[str, str],
) -> Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]:
    """``call(operation, params)`` in a CLIENT span per request; the shard comes from the
    log context of the reader's task (:mod:`shardflow._core.logs`)."""
    from opentelemetry.trace import SpanKind

    async def traced(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        attrs = {**_RPC, "rpc.method": operation, **attributes}
        shard = _logs.fields().get("shard")
        if shard is not None:
            attrs[SHARD] = shard
        with tracer.start_as_current_span(
            f"Kinesis.{operation}", kind=SpanKind.CLIENT, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                return await call(operation, params)
            except errors.AWSError as exc:
                _error(span, exc.code)
                raise

    return traced


def check_available() -> None:
    """Raise errors.MissingDependency when the OpenTelemetry API is not installed."""
    try:
        import opentelemetry.propagate  # noqa: F401
    except ImportError as exc:
        raise errors.MissingDependency(
            f"trace context needs the OpenTelemetry API: {INSTALL_HINT}"
        ) from exc


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None without a valid one."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")
