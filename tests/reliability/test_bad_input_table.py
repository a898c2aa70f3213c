"""Every bad input, and the exception it gets: the table in docs/reliability.md.

Each row below is run by this module (constructors and calls on live objects against
kinesalite) and the documentation's table is checked to be exactly ``render_table()``.
After changing a row, regenerate the table with::

    .venv/bin/python tests/reliability/test_bad_input_table.py
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shardflow import (
    BufferedOutput,
    CognitoCredentials,
    Collector,
    Consumer,
    DynamoDBLeases,
    FileOutput,
    KinesisLimits,
    KinesisOutput,
    MemoryCheckpointer,
    Producer,
    Record,
    S3Sink,
    SQLiteCheckpointer,
    TumblingWindows,
    errors,
)
from shardflow.testing import FaultProxy

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "reliability.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
MiB = 1024 * 1024


class _Output:
    async def send(self, events: Any) -> list[None]:
        return [None] * len(events)


@dataclass
class Live:
    """Objects the call rows use, opened by the async test."""

    producer: Any = None
    full_producer: Any = None
    closed_producer: Any = None
    consumer: Any = None
    closed_consumer: Any = None
    record: Any = None
    collector: Any = None
    closed_collector: Any = None
    buffered: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


Run = Callable[[Live], "Awaitable[object] | object"]


@dataclass(frozen=True)
class Case:
    where: str
    bad: str
    error: type[BaseException]
    run: Run
    match: str = ""


def _builtin(error: type[BaseException]) -> str:
    bases = [b.__name__ for b in (ValueError, TypeError, LookupError) if issubclass(error, b)]
    name = error.__name__ if error.__module__ == "builtins" else f"errors.{error.__name__}"
    if bases and bases[0] != error.__name__:
        return f"`{name}` (a {bases[0]})"
    return f"`{name}`"


def _record(shard: str) -> Record:
    return Record(b"x", "k", "1", None, shard, datetime(2024, 1, 1).astimezone())


P = "Producer(...)"
C = "Consumer(...)"
CASES: list[Case] = [
    # --- Producer.put / put_nowait / put_and_wait (the same checks) ---
    Case("put()", "partition_key empty", errors.InvalidPartitionKey,
         lambda x: x.producer.put(b"x", partition_key="")),
    Case("put()", "partition_key over 256 characters", errors.InvalidPartitionKey,
         lambda x: x.producer.put(b"x", partition_key="k" * 257)),
    Case("put()", "partition_key not a str (None, int, bytes)", errors.InvalidPartitionKey,
         lambda x: x.producer.put(b"x", partition_key=b"k")),
    Case("put()", "partition_key with a lone surrogate ('\\ud800')", errors.InvalidPartitionKey,
         lambda x: x.producer.put(b"x", partition_key="k\ud800")),
    Case("put()", "data + UTF-8 key over the stream's MaxRecordSizeInKiB (default 1 MiB)",
         errors.RecordTooLarge, lambda x: x.producer.put(b"x" * MiB, partition_key="k")),
    Case("put()", "data + UTF-8 key over limits.max_record_bytes given with limits=",
         errors.RecordTooLarge, lambda x: x.extras["small_records"].put(b"x" * 2000,
                                                                        partition_key="k")),
    Case("put_nowait()", "over 1 MiB before the stream's MaxRecordSizeInKiB is known",
         errors.RecordTooLarge, lambda x: x.extras["unreachable"].put_nowait(
             b"x" * MiB, partition_key="k")),
    Case("put()", "object orjson cannot serialise (object(), set, complex)",
         errors.SerializationError, lambda x: x.producer.put({1, 2}, partition_key="k")),
    Case("put()", "int beyond 64 bits, dict with non-str keys, nesting over 254",
         errors.SerializationError, lambda x: x.producer.put({1: 2**70}, partition_key="k")),
    Case("put()", "str with a lone surrogate", errors.SerializationError,
         lambda x: x.producer.put("\udc80", partition_key="k")),
    Case("put()", "explicit_hash_key not decimal digits ('', '-1', ' 1', '1.0', '0x1')",
         errors.InvalidHashKey, lambda x: x.producer.put(b"x", partition_key="k",
                                                         explicit_hash_key="-1")),
    Case("put()", "explicit_hash_key with leading zeros ('01')", errors.InvalidHashKey,
         lambda x: x.producer.put(b"x", partition_key="k", explicit_hash_key="01")),
    Case("put()", "explicit_hash_key >= 2**128 or < 0 (str or int)", errors.InvalidHashKey,
         lambda x: x.producer.put(b"x", partition_key="k", explicit_hash_key=2**128)),
    Case("put()", "explicit_hash_key an int of thousands of digits (10**5000)",
         errors.InvalidHashKey, lambda x: x.producer.put(b"x", partition_key="k",
                                                         explicit_hash_key=10**5000)),
    Case("put()", "explicit_hash_key of another type (float, bool, bytes)",
         errors.InvalidHashKey, lambda x: x.producer.put(b"x", partition_key="k",
                                                         explicit_hash_key=1.0)),
    Case("put()", "producer not started (no `async with`)", errors.ProducerClosed,
         lambda x: Producer("s").put(b"x", partition_key="k")),
    Case("put()", "producer closed", errors.ProducerClosed,
         lambda x: x.closed_producer.put(b"x", partition_key="k")),
    Case("put_nowait()", "queue full (max_queue_records / max_queue_bytes)", errors.QueueFull,
         lambda x: x.full_producer.put_nowait(b"x", partition_key="k")),
    Case("aclose()", "grace negative or NaN", ValueError,
         lambda x: x.producer.aclose(grace=-1), "grace"),
    # --- Producer(...) ---
    Case(P, "stream empty, or an ARN that is not a Kinesis stream's", ValueError,
         lambda x: Producer("arn:aws:s3:::bucket"), "ARN"),
    Case(P, "client together with endpoint_url/region_name/credentials", ValueError,
         lambda x: Producer("s", client=object(), endpoint_url="http://127.0.0.1:1"),
         "client"),
    Case(P, "max_queue_records / max_queue_bytes / max_in_flight < 1", ValueError,
         lambda x: Producer("s", max_in_flight=0), "max_in_flight"),
    Case(P, "max_in_flight > 1000", ValueError,
         lambda x: Producer("s", max_in_flight=1001), "max_in_flight"),
    Case(P, "an int option given a float, str or bool", TypeError,
         lambda x: Producer("s", max_queue_records=1.5), "max_queue_records"),
    Case(P, "max_queue_bytes too small for one record of max_record_bytes", ValueError,
         lambda x: Producer("s", max_queue_bytes=1000), "max_queue_bytes"),
    Case(P, "linger < 0, record_ttl <= 0, NaN or infinite", ValueError,
         lambda x: Producer("s", record_ttl=math.inf), "record_ttl"),
    Case(P, "linger / record_ttl / rate_limit, or aclose() grace, an int beyond float range "
         "(10**400)", ValueError, lambda x: Producer("s", linger=10**400), "linger"),
    Case(P, "linger / record_ttl not a number", TypeError,
         lambda x: Producer("s", linger="0.1"), "linger"),
    Case(P, "aggregate / ordered not a bool", TypeError,
         lambda x: Producer("s", ordered=1), "ordered"),
    Case(P, "rate_limit outside (0, 1]", ValueError,
         lambda x: Producer("s", rate_limit=1.5), "rate_limit"),
    Case(P, "rate_limit not a number or None", TypeError,
         lambda x: Producer("s", rate_limit="1"), "rate_limit"),
    Case(P, "limits not a KinesisLimits", TypeError,
         lambda x: Producer("s", limits={"max_batch_records": 10}), "limits"),
    Case(P, "credentials without botocore_credentials()", TypeError,
         lambda x: Producer("s", credentials="secret"), "credentials"),
    Case("KinesisLimits(...)", "a field outside AWS's range (max_batch_records=501, ...)",
         ValueError, lambda x: KinesisLimits(max_batch_records=501), "max_batch_records"),
    Case("KinesisLimits(...)", "a field not an int", TypeError,
         lambda x: KinesisLimits(max_record_bytes=1.5), "max_record_bytes"),
    # --- Consumer(...) and its calls ---
    Case(C, "stream empty or not a stream ARN", ValueError, lambda x: Consumer(""), "stream"),
    Case(C, "start_at not TRIM_HORIZON/LATEST/datetime, or a naive datetime", ValueError,
         lambda x: Consumer("s", start_at=datetime(2024, 1, 1)), "timezone"),
    Case(C, "poll_interval below 0.2 s, NaN or infinite", ValueError,
         lambda x: Consumer("s", poll_interval=0.1), "poll_interval"),
    Case(C, "a number option given a str (poll_interval='1')", TypeError,
         lambda x: Consumer("s", poll_interval="1"), "poll_interval"),
    Case(C, "max_buffer_records / get_records_limit < 1, or a float", ValueError,
         lambda x: Consumer("s", max_buffer_records=0), "max_buffer_records"),
    Case(C, "get_records_limit above limits.max_get_records (10,000)", ValueError,
         lambda x: Consumer("s", get_records_limit=10_001), "get_records_limit"),
    Case(C, "resync_interval / close_timeout <= 0", ValueError,
         lambda x: Consumer("s", close_timeout=0), "close_timeout"),
    Case(C, "checkpointer without app_name", ValueError,
         lambda x: Consumer("s", checkpointer=MemoryCheckpointer()), "app_name"),
    Case(C, "app_name empty", ValueError, lambda x: Consumer("s", app_name=""), "app_name"),
    Case(C, "checkpointer without bind()", TypeError,
         lambda x: Consumer("s", app_name="a", checkpointer=object()), "checkpointer"),
    Case(C, "limits not a KinesisLimits, credentials without botocore_credentials()",
         TypeError, lambda x: Consumer("s", limits=3), "limits"),
    Case("Consumer, S3Sink, DynamoDBLeases, CognitoCredentials",
         "endpoint_url not a str", TypeError,
         lambda x: Consumer("s", endpoint_url=5), "endpoint_url"),
    Case("Consumer, S3Sink, DynamoDBLeases, CognitoCredentials",
         "endpoint_url without http(s):// and a host ('localhost:4567')", ValueError,
         lambda x: S3Sink("b", endpoint_url="localhost:4567"), "endpoint_url"),
    Case("Consumer, S3Sink, DynamoDBLeases, CognitoCredentials",
         "region_name not a region name ('', 'us east 1'), or not a str", ValueError,
         lambda x: DynamoDBLeases("leases", region_name="us east 1"), "region_name"),
    Case("Consumer, SQLiteCheckpointer, DynamoDBLeases, BufferedOutput, S3Sink, "
         "TumblingWindows, CognitoCredentials, FaultProxy",
         "a number of seconds or a fraction given as an int beyond float range (-10**400)",
         ValueError, lambda x: DynamoDBLeases("leases", failover_time=-(10**400)),
         "failover_time"),
    Case("checkpoint()", "not a Record", TypeError,
         lambda x: x.consumer.checkpoint("49500000"), "Record"),
    Case("checkpoint()", "a Record of a shard this consumer does not read", ValueError,
         lambda x: x.consumer.checkpoint(_record("shardId-000000000999")), "not read"),
    Case("checkpoint()", "consumer closed", errors.ConsumerClosed,
         lambda x: x.closed_consumer.checkpoint(x.record)),
    Case("SQLiteCheckpointer(...)", "path empty or not a path", ValueError,
         lambda x: SQLiteCheckpointer(""), "path"),
    Case("SQLiteCheckpointer(...)", "busy_timeout negative, NaN or infinite",
         ValueError, lambda x: SQLiteCheckpointer("cp.db", busy_timeout=math.nan),
         "busy_timeout"),
    Case("SQLiteCheckpointer(...)", "busy_timeout not a number (a bool included)",
         TypeError, lambda x: SQLiteCheckpointer("cp.db", busy_timeout=True),
         "busy_timeout"),
    Case("DynamoDBLeases(...)", "table not a DynamoDB table name (3-255 of A-Za-z0-9_.-)",
         ValueError, lambda x: DynamoDBLeases("ab"), "table"),
    Case("DynamoDBLeases(...)", "worker_id empty or over 1024 characters", ValueError,
         lambda x: DynamoDBLeases("leases", worker_id=" "), "worker_id"),
    Case("DynamoDBLeases(...)", "failover_time below 0.5 s or not finite", ValueError,
         lambda x: DynamoDBLeases("leases", failover_time=0.1), "failover_time"),
    Case("DynamoDBLeases(...)", "failover_time not a number, shared_table not a bool",
         TypeError, lambda x: DynamoDBLeases("leases", shared_table="yes"), "shared_table"),
    # --- Collector, outputs ---
    Case("Collector(...)", "clock not callable", TypeError, lambda x: Collector(clock=5),
         "clock"),
    Case("filter() / output()", "pattern empty, with an empty part, or '**' not last",
         ValueError, lambda x: Collector().filter("a.**.b", lambda e: e), "pattern"),
    Case("filter() / output()", "pattern not a str", TypeError,
         lambda x: Collector().output(5, _Output()), "pattern"),
    Case("filter()", "fn not callable", TypeError,
         lambda x: Collector().filter("a.*", 5), "callable"),
    Case("output()", "an object without send()", TypeError,
         lambda x: Collector().output("a.*", object()), "send"),
    Case("output()", "after the collector started", RuntimeError,
         lambda x: x.collector.output("a.*", _Output()), "before"),
    Case("post()", "tag empty, with an empty part, or with a wildcard", ValueError,
         lambda x: x.collector.post("app..click", {}), "tag"),
    Case("post()", "tag not a str (also unhashable ones)", TypeError,
         lambda x: x.collector.post(["app"], {}), "tag"),
    Case("post()", "event not a mapping", TypeError,
         lambda x: x.collector.post("app.click", [("a", 1)]), "mapping"),
    Case("post()", "event not JSON-serialisable", errors.SerializationError,
         lambda x: x.collector.post("app.click", {"a": object()})),
    Case("post()", "collector not started, or closed", errors.CollectorClosed,
         lambda x: x.closed_collector.post("app.click", {})),
    Case("BufferedOutput(...)", "output without send()", TypeError,
         lambda x: BufferedOutput(object()), "send"),
    Case("BufferedOutput(...)", "flush_interval, max_batch, backoff_*, purge_age, "
         "max_spool_* not positive", ValueError,
         lambda x: BufferedOutput(_Output(), max_batch=0), "max_batch"),
    Case("BufferedOutput(...)", "an option of the wrong type (an int option given a float)",
         TypeError, lambda x: BufferedOutput(_Output(), max_batch=1.5), "max_batch"),
    Case("BufferedOutput(...)", "max_retries negative", ValueError,
         lambda x: BufferedOutput(_Output(), max_retries=-1), "max_retries"),
    Case("BufferedOutput(...)", "backoff_cap smaller than backoff_base", ValueError,
         lambda x: BufferedOutput(_Output(), backoff_base=2, backoff_cap=1), "backoff_cap"),
    Case("BufferedOutput(...)", "overflow not 'block', 'drop_oldest' or 'raise'", ValueError,
         lambda x: BufferedOutput(_Output(), overflow="drop"), "overflow"),
    Case("BufferedOutput(...)", "close_timeout negative", ValueError,
         lambda x: BufferedOutput(_Output(), close_timeout=-1), "close_timeout"),
    Case("BufferedOutput(...)", "on_drop / clock not callable, fsync not a bool", TypeError,
         lambda x: BufferedOutput(_Output(), fsync="yes"), "fsync"),
    Case("BufferedOutput.post()", "not started (outside async with), or closed",
         errors.OutputClosed, lambda x: BufferedOutput(_Output()).post({"a": 1})),
    Case("BufferedOutput.post()", "an event larger than max_spool_bytes", ValueError,
         lambda x: x.buffered.post({"a": "x" * 200}), "never fit"),
    Case("BufferedOutput.post()", "buffer full with overflow='raise'", errors.BufferFull,
         lambda x: x.buffered.post({"a": 1})),
    Case("KinesisOutput(...)", "producer neither a Producer nor a function", TypeError,
         lambda x: KinesisOutput(5), "producer"),
    Case("KinesisOutput(...)", "partition_key empty, or not a str/callable", TypeError,
         lambda x: KinesisOutput(Producer("s"), partition_key=""), "partition_key"),
    Case("FileOutput(...)", "path not a str/PathLike", TypeError, lambda x: FileOutput(5),
         "path"),
    Case("FileOutput(...)", "path empty", ValueError, lambda x: FileOutput(""), "path"),
    Case("FileOutput(...)", "fsync not a bool", TypeError,
         lambda x: FileOutput("e.ndjson", fsync=1), "fsync"),
    # --- sinks ---
    Case("S3Sink(...)", "bucket empty or with '/'", ValueError, lambda x: S3Sink("a/b"),
         "bucket"),
    Case("S3Sink(...)", "prefix not a str, max_bytes not an int", TypeError,
         lambda x: S3Sink("b", max_bytes=1.5), "max_bytes"),
    Case("S3Sink(...)", "max_bytes outside [1, 5 GiB]", ValueError,
         lambda x: S3Sink("b", max_bytes=0), "max_bytes"),
    Case("S3Sink(...)", "max_interval / close_timeout not positive", ValueError,
         lambda x: S3Sink("b", max_interval=0), "max_interval"),
    Case("S3Sink(...)", "compression not 'gzip' or None", ValueError,
         lambda x: S3Sink("b", compression="zstd"), "compression"),
    Case("S3Sink(...)", "stream not a stream name or ARN", ValueError,
         lambda x: S3Sink("b", stream="arn:aws:s3:::x"), "ARN"),
    Case("TumblingWindows(...)", "size not positive, allowed_lateness negative", ValueError,
         lambda x: TumblingWindows(0), "size"),
    Case("TumblingWindows(...)", "key / event_time / on_window / on_late not callable",
         TypeError, lambda x: TumblingWindows(60, key=5), "key"),
    Case("TumblingWindows(...)", "max_buffered not a positive int", ValueError,
         lambda x: TumblingWindows(60, max_buffered=0), "max_buffered"),
    # --- credentials and the fault proxy ---
    Case("CognitoCredentials(...)", "identity_pool_id not 'region:uuid'", ValueError,
         lambda x: CognitoCredentials("pool", "us-east-1"), "identity_pool_id"),
    Case("CognitoCredentials(...)", "region_name empty", ValueError,
         lambda x: CognitoCredentials("us-east-1:x", ""), "region_name"),
    Case("CognitoCredentials(...)", "logins neither a mapping nor a callable", TypeError,
         lambda x: CognitoCredentials("us-east-1:x", "us-east-1", logins=3), "logins"),
    Case("CognitoCredentials(...)", "refresh_margin not positive", ValueError,
         lambda x: CognitoCredentials("us-east-1:x", "us-east-1", refresh_margin=0),
         "refresh_margin"),
    Case("FaultProxy(...)", "upstream_url not an http(s) URL", ValueError,
         lambda x: FaultProxy("localhost:4567"), "upstream_url"),
    Case("FaultProxy(...)", "a fraction outside [0, 1], or fractions of one kind over 1",
         ValueError, lambda x: FaultProxy("http://h", throttle_fraction=1.5), "throttle"),
    Case("FaultProxy(...)", "a fraction or latency not a number, a flag not a bool",
         TypeError, lambda x: FaultProxy("http://h", stall="yes"), "stall"),
    Case("FaultProxy(...)", "port outside 0..65535, latency negative", ValueError,
         lambda x: FaultProxy("http://h", port=70000), "port"),
]

NOT_ERRORS = [
    ("Consumer", "a record starting with the KPL magic that is not a valid aggregate "
     "(bad MD5, malformed protobuf, bad key index, truncated)",
     "delivered as plain data, byte for byte (test_bad_input.py)"),
    ("Consumer", "a valid aggregate with no sub-records", "delivers nothing, as the KCL"),
]


def render_table() -> str:
    lines = ["| Where | Bad input | Raises |", "|---|---|---|"]
    for case in CASES:
        bad = case.bad.replace("|", "\\|")
        lines.append(f"| `{case.where}` | {bad} | {_builtin(case.error)} |")
    for where, bad, outcome in NOT_ERRORS:
        lines.append(f"| `{where}` | {bad} | no error: {outcome} |")
    return "\n".join(lines)


async def _check(case: Case, live: Live) -> str | None:
    """None if ``case`` raised what it documents, else what went wrong."""
    try:
        outcome = case.run(live)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except case.error as exc:
        if case.match and not re.search(case.match, str(exc)):
            return f"{case.where} / {case.bad}: message {str(exc)!r} lacks {case.match!r}"
        return None
    except Exception as exc:
        return f"{case.where} / {case.bad}: raised {type(exc).__name__}: {exc}"
    if isinstance(outcome, asyncio.Future):
        outcome.cancel()
    return f"{case.where} / {case.bad}: accepted (returned {outcome!r:.80})"


async def test_every_row_of_the_table_raises_what_it_says(kinesalite_url: str) -> None:
    from support import create_stream, free_port
    from support_consumer import POLL, collect, put_records

    stream = create_stream(kinesalite_url)
    put_records(kinesalite_url, stream, [("k", b"one")])
    live = Live()
    url = kinesalite_url
    async with FaultProxy(url, stall=True) as stalled, \
            Producer(stream, endpoint_url=url) as live.producer, \
            Producer(stream, endpoint_url=url,
                     limits=KinesisLimits(max_record_bytes=1000)) as small, \
            Producer(stream, endpoint_url=f"http://127.0.0.1:{free_port()}") as unreachable, \
            Producer(stream, endpoint_url=stalled.url, max_queue_records=1,
                     record_ttl=1) as live.full_producer, \
            Consumer(stream, endpoint_url=url, poll_interval=POLL) as live.consumer:
        live.extras["small_records"] = small
        live.extras["unreachable"] = unreachable
        live.full_producer.put_nowait(b"fills the queue", partition_key="k")
        async with Producer(stream, endpoint_url=url) as live.closed_producer:
            pass
        async with Consumer(stream, endpoint_url=url, poll_interval=POLL) as closed:
            [live.record] = await collect(closed, 1)
        live.closed_consumer = closed
        [_] = await collect(live.consumer, 1)
        live.closed_collector = Collector()
        live.collector = Collector()
        live.collector.output("app.**", _Output())
        live.buffered = BufferedOutput(_Output(), overflow="raise", max_spool_records=1,
                                       max_spool_bytes=100, flush_interval=3600)
        async with live.collector, live.buffered:
            await live.buffered.post({"a": 1})  # now full: flushes only hourly
            problems = [p for case in CASES if (p := await _check(case, live)) is not None]
        await live.full_producer.aclose(grace=0)
    assert problems == []
    assert len(CASES) >= 90


def test_the_documented_table_is_this_one() -> None:
    text = DOC.read_text()
    assert START in text, f"{DOC} lacks the table markers"
    assert END in text, f"{DOC} lacks the table markers"
    documented = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == render_table(), (
        "docs/reliability.md is out of date: run "
        "`.venv/bin/python tests/reliability/test_bad_input_table.py`"
    )


def _write_table() -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render_table()}\n{END}{tail}")
    print(f"{DOC}: {len(CASES) + len(NOT_ERRORS)} rows")


if __name__ == "__main__":
    sys.exit(_write_table())
