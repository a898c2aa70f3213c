"""Bad options to every public constructor: hypothesis throws values of every type at
each option; a value of the wrong type must be refused at once with TypeError or
ValueError naming the option, and no value may raise anything else. (Range checks of
each option, with exact messages, are in the unit tests of each component.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow import (
    BufferedOutput,
    CognitoCredentials,
    Collector,
    Consumer,
    DynamoDBLeases,
    FileOutput,
    KinesisLimits,
    KinesisOutput,
    Producer,
    S3Sink,
    SQLiteCheckpointer,
    StdoutOutput,
    TumblingWindows,
)
from shardflow.testing import FaultProxy


class _Output:
    async def send(self, events: Any) -> list[None]:
        return [None] * len(events)


class _Putter:
    async def put(self, obj: Any, *, partition_key: str) -> Any:
        raise NotImplementedError


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


KINDS: dict[str, Callable[[object], bool]] = {
    "number": _is_number,
    "number_or_none": lambda v: v is None or _is_number(v),
    "int": _is_int,
    "int_or_none": lambda v: v is None or _is_int(v),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str_or_none": lambda v: v is None or isinstance(v, str),
    "path": lambda v: isinstance(v, str | Path),
    "callable_or_none": lambda v: v is None or callable(v),
    "limits_or_none": lambda v: v is None or isinstance(v, KinesisLimits),
}
"""Which values have the right type for an option of each kind (a value of the right
type may still be out of range: ValueError)."""


@dataclass(frozen=True)
class Option:
    owner: str
    name: str
    kind: str
    build: Callable[[Any], object]

    def __repr__(self) -> str:
        return f"{self.owner}({self.name}=...)"


def _options(owner: str, make: Callable[..., object], kinds: dict[str, str]) -> list[Option]:
    return [
        Option(owner, name, kind, lambda v, name=name: make(**{name: v}))
        for name, kind in kinds.items()
    ]


OPTIONS: list[Option] = [
    *_options("Producer", lambda **kw: Producer("s", **kw), {
        "endpoint_url": "str_or_none", "region_name": "str_or_none",
        "max_queue_records": "int", "max_queue_bytes": "int", "linger": "number",
        "max_in_flight": "int", "aggregate": "bool", "ordered": "bool",
        "rate_limit": "number_or_none", "record_ttl": "number", "limits": "limits_or_none",
    }),
    Option("Producer", "stream", "str", lambda v: Producer(v)),
    *_options("Consumer", lambda **kw: Consumer("s", **kw), {
        "app_name": "str_or_none", "endpoint_url": "str_or_none",
        "region_name": "str_or_none", "poll_interval": "number",
        "max_buffer_records": "int", "get_records_limit": "int",
        "resync_interval": "number", "close_timeout": "number", "limits": "limits_or_none",
    }),
    Option("Consumer", "stream", "str", lambda v: Consumer(v)),
    *_options("BufferedOutput", lambda **kw: BufferedOutput(_Output(), **kw), {
        "flush_interval": "number", "max_batch": "int", "max_retries": "int_or_none",
        "backoff_base": "number", "backoff_cap": "number", "purge_age": "number_or_none",
        "max_spool_records": "int_or_none", "max_spool_bytes": "int_or_none",
        "overflow": "str", "close_timeout": "number", "fsync": "bool",
        "on_drop": "callable_or_none",
    }),
    *_options("KinesisOutput", lambda **kw: KinesisOutput(_Putter(), **kw), {
        "partition_key": "callable_or_none",  # or a field name (str), below
    }),
    *_options("FileOutput", lambda **kw: FileOutput("events.ndjson", **kw), {
        "fsync": "bool",
    }),
    Option("FileOutput", "path", "path", lambda v: FileOutput(v)),
    *_options("S3Sink", lambda **kw: S3Sink("bucket", **kw), {
        "prefix": "str", "max_bytes": "int", "max_interval": "number",
        "compression": "str_or_none", "stream": "str_or_none",
        "endpoint_url": "str_or_none", "region_name": "str_or_none",
        "close_timeout": "number",
    }),
    Option("S3Sink", "bucket", "str", lambda v: S3Sink(v)),
    *_options("DynamoDBLeases", lambda **kw: DynamoDBLeases("leases", **kw), {
        "worker_id": "str_or_none", "failover_time": "number", "shared_table": "bool",
        "endpoint_url": "str_or_none", "region_name": "str_or_none",
    }),
    Option("DynamoDBLeases", "table", "str", lambda v: DynamoDBLeases(v)),
    Option("SQLiteCheckpointer", "path", "path", lambda v: SQLiteCheckpointer(v)),
    *_options("SQLiteCheckpointer", lambda **kw: SQLiteCheckpointer("cp.db", **kw), {
        "busy_timeout": "number",
    }),
    *_options("CognitoCredentials",
              lambda **kw: CognitoCredentials("us-east-1:x", "us-east-1", **kw), {
                  "endpoint_url": "str_or_none", "refresh_margin": "number",
              }),
    Option("CognitoCredentials", "identity_pool_id", "str",
           lambda v: CognitoCredentials(v, "us-east-1")),
    Option("CognitoCredentials", "region_name", "str",
           lambda v: CognitoCredentials("us-east-1:x", v)),
    *_options("TumblingWindows", lambda **kw: TumblingWindows(60, **kw), {
        "key": "callable_or_none", "allowed_lateness": "number",
        "event_time": "callable_or_none", "on_window": "callable_or_none",
        "on_late": "callable_or_none", "max_buffered": "int",
    }),
    Option("TumblingWindows", "size", "number", lambda v: TumblingWindows(v)),
    *_options("Collector", lambda **kw: Collector(**kw), {"clock": "callable_or_none"}),
    *_options("FaultProxy", lambda **kw: FaultProxy("http://127.0.0.1:1", **kw), {
        "seed": "int_or_none", "port": "int", "throttle_fraction": "number",
        "error_5xx_fraction": "number", "reset_after_fraction": "number",
        "latency": "number", "enforce_write_limits": "bool", "stall": "bool",
        "expire_iterator_fraction": "number", "read_throttle_fraction": "number",
        "limits": "limits_or_none",
    }),
    *_options("KinesisLimits", lambda **kw: KinesisLimits(**kw), {
        "max_batch_records": "int", "max_record_bytes": "int",
        "max_partition_key_chars": "int", "max_get_records": "int",
    }),
]

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63, 10**30, 10**400, -(10**400)]),  # 10**400: beyond float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 1e-9, 1e300, 1.7e308]),
    st.text(max_size=12),
    st.sampled_from(["", " ", "1", "0.5", "gzip", "block", "\udcff", "s/3", "x" * 300]),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.builds(object),
    st.complex_numbers(allow_nan=False, max_magnitude=10),
    st.just(Path("x")),
    st.just(print),
)


@settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(option=st.sampled_from(OPTIONS), value=garbage)
def test_a_wrong_type_is_refused_by_name_and_nothing_else_escapes(
    option: Option, value: Any
) -> None:
    right_type = KINDS[option.kind](value)
    if option.kind == "callable_or_none" and option.owner == "KinesisOutput":
        right_type = right_type or (isinstance(value, str) and bool(value))
    try:
        option.build(value)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert option.name.split("_")[0] in message or option.name in message, (
            f"{option!r} with {value!r}: the message does not name the option: {message}"
        )
        return
    except Exception as exc:  # pragma: no cover - reported by the assertion
        pytest.fail(f"{option!r} with {value!r} raised {type(exc).__name__}: {exc}")
    assert right_type, f"{option!r} accepted {value!r} ({type(value).__name__})"


NUMBER_OPTIONS = [o for o in OPTIONS if o.kind in ("number", "number_or_none")]


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
@pytest.mark.parametrize("option", NUMBER_OPTIONS, ids=repr)
def test_an_int_beyond_float_range_is_a_value_error_naming_the_option(
    option: Option, value: int
) -> None:
    with pytest.raises(ValueError, match=option.name) as caught:
        option.build(value)
    message = str(caught.value)
    assert len(message) < 200, f"the number is printed in full: {message[:120]}..."


def test_every_public_constructor_is_fuzzed() -> None:
    owners = {o.owner for o in OPTIONS}
    assert owners >= {
        "Producer", "Consumer", "Collector", "BufferedOutput", "KinesisOutput",
        "FileOutput", "S3Sink", "DynamoDBLeases", "SQLiteCheckpointer",
        "CognitoCredentials", "TumblingWindows", "FaultProxy", "KinesisLimits",
    }
    assert StdoutOutput  # takes only an optional text stream: nothing to fuzz


@pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["10**5000", "-10**5000"])
@pytest.mark.parametrize("option", OPTIONS, ids=repr)
def test_an_int_of_thousands_of_digits_is_refused_by_name_or_accepted(
    option: Option, value: int
) -> None:
    """Beyond 4,300 digits ``repr(int)`` itself raises (Python's int-to-str limit): a
    message must still name the option, and not print the number in full."""
    try:
        option.build(value)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert option.name in message, f"{option!r}: the message does not name it: {message}"
        assert len(message) < 250, f"the number is printed in full: {message[:120]}..."
        return
    assert KINDS[option.kind](value), f"{option!r} accepted a {type(value).__name__}"
