"""Fault injection for tests: a Kinesis proxy that throttles, fails, resets and stalls.

No local Kinesis endpoint (moto, kinesalite) throttles or fails part of a batch, yet real
Kinesis does both every day. :class:`FaultProxy` is an HTTP proxy on 127.0.0.1 in front of
any Kinesis endpoint (moto, kinesalite, anything that speaks the AWS JSON 1.1 protocol).
It forwards requests unchanged, except where a fault rewrites or replaces them, and its
errors look exactly like AWS's, so botocore and hand-written clients react as they would
against the real service. It runs in the test's own event loop::

    from shardflow import Producer
    from shardflow.testing import FaultProxy

    async def test_every_record_survives_throttling(kinesis_endpoint: str) -> None:
        async with FaultProxy(kinesis_endpoint, seed=7, throttle_fraction=0.2) as proxy:
            async with Producer("logs", endpoint_url=proxy.url) as producer:
                for i in range(1000):
                    await producer.put({"n": i}, partition_key=f"user-{i % 50}")
                await producer.flush()
            assert proxy.counts["throttled_entries"] > 0
            # ...read the stream back from kinesis_endpoint and check nothing is missing

    async def test_reader_waits_out_an_outage(kinesis_endpoint: str) -> None:
        async with FaultProxy(kinesis_endpoint, stall=True) as proxy:
            ...                                   # requests hang: check backpressure
            proxy.configure(stall=False)          # they are answered from now on
            proxy.configure(error_5xx_fraction=0.5, seed=1)   # change faults at runtime

Faults (all off by default; fractions are probabilities between 0 and 1):

- ``throttle_fraction`` / ``internal_failure_fraction``: per PutRecords entry, answered
  with ``ProvisionedThroughputExceededException`` / ``InternalFailure``. Faulted entries
  are removed from the request before it is forwarded, so they are NOT written upstream;
  the answer has them at their original index with a correct ``FailedRecordCount``. A
  PutRecord call fails as a whole (400 throttling, 500 internal failure).
- ``enforce_write_limits``: AWS's per-shard write limits (``limits``: 1000 records/s and
  1 MiB/s of data plus partition keys) with token buckets holding one second's worth;
  entries beyond the budget are throttled as above. Shards come from the upstream's
  ListShards, refreshed when an entry lands elsewhere than predicted or the stream is
  resharded through the proxy.
- ``enforce_read_limits``: 5 GetRecords calls/s and 2 MiB/s per shard (``limits``); a big
  answer puts the shard in debt until refilled, as AWS does.
  ``expire_iterator_fraction`` / ``read_throttle_fraction``: per GetRecords call,
  ``ExpiredIteratorException`` / ``ProvisionedThroughputExceededException`` (not forwarded).
- Request level, for the operations in ``operations`` (default: PutRecord, PutRecords,
  GetRecords; ``{"*"}`` means every operation): ``error_5xx_fraction`` (500
  ``InternalFailure`` or 503 ``ServiceUnavailable``, not forwarded),
  ``reset_before_fraction`` (the connection is reset, nothing forwarded),
  ``reset_after_fraction`` (forwarded and applied upstream, then the connection is reset:
  the client cannot know it succeeded, and a retry writes duplicates), ``latency``
  (seconds added), ``stall`` (requests are accepted and never answered, until
  ``configure(stall=False)`` releases them or the proxy closes and resets them).

With a ``seed``, one ``random.Random(seed)`` makes every choice, so a test that sends the
same requests in the same order sees the same faults. ``counts`` tells what happened; its
keys are in :data:`COUNTS`.

Per-entry faults rewrite request bodies, which breaks SigV4 signatures: use them in front
of local endpoints (they ignore signatures), not in front of AWS itself.

From a synchronous test or another process, run ``shardflow proxy --upstream URL
[--throttle 0.2 ...]``: it prints its URL on the first line of standard output and runs
until Ctrl-C (``shardflow proxy --help`` lists the options).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio
import orjson
from aiohttp import web

from . import _aws, _faults
from ._faults import INTERNAL_FAILURE, THROTTLED
from .limits import KinesisLimits
from .models import Shard

__all__ = ["COUNTS", "FaultConfig", "FaultProxy", "serve_forever"]

log = logging.getLogger("shardflow.testing")

LOOPBACK = "127.0.0.1"

DATA_PLANE = frozenset({"PutRecord", "PutRecords", "GetRecords"})
"""Operations request-level faults apply to unless ``operations`` says otherwise."""

_RESHARDING = ("SplitShard", "MergeShards", "UpdateShardCount", "CreateStream", "DeleteStream")

COUNTS: Mapping[str, str] = {
    "requests": "HTTP requests received",
    "forwarded": "requests sent to the upstream (the proxy's own ListShards excluded)",
    "put_entries": "records in PutRecords and PutRecord requests received",
    "written_entries": "records the upstream acknowledged as written",
    "throttled_entries": "records answered ProvisionedThroughputExceededException",
    "write_limited_entries": "of throttled_entries, those over a shard's write limits",
    "internal_failure_entries": "records answered InternalFailure",
    "errors_5xx": "requests answered 500 InternalFailure or 503 ServiceUnavailable",
    "resets_before": "connections reset before forwarding (nothing applied)",
    "resets_after": "connections reset after the upstream answered",
    "reset_after_entries": "records written upstream whose answer a reset dropped",
    "delayed": "requests given added latency",
    "stalled": "requests held by stall",
    "get_records": "GetRecords requests received",
    "read_records": "records returned by forwarded GetRecords calls",
    "expired_iterators": "GetRecords answered ExpiredIteratorException",
    "read_throttled": "GetRecords answered ProvisionedThroughputExceededException",
    "read_limited": "of read_throttled, those over a shard's read limits",
    "upstream_errors": "forwarded requests the upstream answered with an error status",
    "upstream_unreachable": "requests whose upstream call failed (client connection reset)",
    "shard_map_refreshes": "ListShards calls the proxy made to map entries to shards",
}
"""Every key of :attr:`FaultProxy.counts`, with what it counts."""

_RequestFault = Literal["reset_before", "5xx", "reset_after"]
_Outcome = tuple[web.StreamResponse, int]
_Handler = Callable[[web.BaseRequest, bytes, str], Awaitable[_Outcome]]


class _Unreachable(Exception):
    """The upstream call failed; the client's connection is reset."""


def _fraction(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _operations(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, set | frozenset | list | tuple):
        raise TypeError(
            f"operations must be a set of operation names such as {{'PutRecords'}}, or None; "
            f"got {value!r}"
        )
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"operations must hold non-empty operation names, got {name!r}")
    return names


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """The faults a :class:`FaultProxy` injects (see the module documentation)."""

    throttle_fraction: float = 0.0
    internal_failure_fraction: float = 0.0
    error_5xx_fraction: float = 0.0
    reset_before_fraction: float = 0.0
    reset_after_fraction: float = 0.0
    latency: float = 0.0
    enforce_write_limits: bool = False
    enforce_read_limits: bool = False
    expire_iterator_fraction: float = 0.0
    read_throttle_fraction: float = 0.0
    stall: bool = False
    operations: frozenset[str] | None = None
    limits: KinesisLimits = KinesisLimits()  # noqa: RUF009 - frozen value

    def __post_init__(self) -> None:
        for name in (
            "throttle_fraction",
            "internal_failure_fraction",
            "error_5xx_fraction",
            "reset_before_fraction",
            "reset_after_fraction",
            "expire_iterator_fraction",
            "read_throttle_fraction",
        ):
            _fraction(name, getattr(self, name))
        groups = (
            ("throttle_fraction", "internal_failure_fraction"),
            ("reset_before_fraction", "error_5xx_fraction", "reset_after_fraction"),
            ("expire_iterator_fraction", "read_throttle_fraction"),
        )
        for group in groups:
            if sum(getattr(self, name) for name in group) > 1.0:
                raise ValueError(f"{' + '.join(group)} must not exceed 1")
        latency = self.latency
        if not isinstance(latency, int | float) or isinstance(latency, bool):
            raise TypeError(f"latency must be a number of seconds, got {latency!r}")
        if not (latency >= 0 and math.isfinite(latency)):
            raise ValueError(f"latency must be finite and >= 0 seconds, got {latency!r}")
        for name in ("enforce_write_limits", "enforce_read_limits", "stall"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "operations", _operations(self.operations))
        if not isinstance(self.limits, KinesisLimits):
            raise TypeError(f"limits must be a KinesisLimits, got {self.limits!r}")

    def applies_to(self, operation: str) -> bool:
        """True if request-level faults (5xx, resets, latency, stall) apply to it."""
        ops = DATA_PLANE if self.operations is None else self.operations
        return operation in ops or "*" in ops


_FIELDS = frozenset(f.name for f in dataclasses.fields(FaultConfig))


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _stream_of(doc: Mapping[str, Any] | None) -> tuple[str, dict[str, str]] | None:
    """(cache key, ListShards parameters) for the stream a request names."""
    if doc is None:
        return None
    name, arn = doc.get("StreamName"), doc.get("StreamARN")
    if isinstance(name, str) and name:
        return name, {"StreamName": name}
    if isinstance(arn, str) and arn:
        try:
            return _aws.stream_name(arn), {"StreamARN": arn}
        except ValueError:
            return arn, {"StreamARN": arn}
    return None


def _relay(status: int, headers: Mapping[str, str], body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


class FaultProxy:
    """A fault-injecting Kinesis proxy on 127.0.0.1 (see the module documentation).

    Use as ``async with FaultProxy(url, ...) as proxy`` (or ``await proxy.start()`` and
    ``await proxy.aclose()``); send requests to :attr:`url`. Options are those of
    :class:`FaultConfig`, plus ``seed`` (for ``random.Random``) and ``port`` (0: any free
    port). Invalid options raise ``TypeError`` or ``ValueError`` here.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        seed: int | None = None,
        port: int = 0,
        throttle_fraction: float = 0.0,
        internal_failure_fraction: float = 0.0,
        error_5xx_fraction: float = 0.0,
        reset_before_fraction: float = 0.0,
        reset_after_fraction: float = 0.0,
        latency: float = 0.0,
        enforce_write_limits: bool = False,
        enforce_read_limits: bool = False,
        expire_iterator_fraction: float = 0.0,
        read_throttle_fraction: float = 0.0,
        stall: bool = False,
        operations: set[str] | frozenset[str] | None = None,
        limits: KinesisLimits = KinesisLimits(),  # noqa: B008 - frozen value
    ) -> None:
        parts = urlsplit(upstream_url) if isinstance(upstream_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream_url must be an http(s) URL, got {upstream_url!r}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int between 0 and 65535, got {port!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self._upstream = upstream_url.rstrip("/")
        self._port = port
        self._config = FaultConfig(
            throttle_fraction=throttle_fraction,
            internal_failure_fraction=internal_failure_fraction,
            error_5xx_fraction=error_5xx_fraction,
            reset_before_fraction=reset_before_fraction,
            reset_after_fraction=reset_after_fraction,
            latency=latency,
            enforce_write_limits=enforce_write_limits,
            enforce_read_limits=enforce_read_limits,
            expire_iterator_fraction=expire_iterator_fraction,
            read_throttle_fraction=read_throttle_fraction,
            stall=stall,
            operations=operations,  # type: ignore[arg-type]  # normalised by FaultConfig
            limits=limits,
        )
        self._rng = random.Random(seed)
        self._counts = dict.fromkeys(COUNTS, 0)
        self._maps = _faults.ShardMaps(self._fetch_shards)
        self._iterators = _faults.IteratorShards()
        self._write_budgets: dict[tuple[str, str], _faults.WriteBudget] = {}
        self._read_budgets: dict[tuple[str, str], _faults.ReadBudget] = {}
        self._changed = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        self._started = False
        self._closing = False
        self._handlers: dict[str, _Handler] = {
            "PutRecords": self._put_records,
            "PutRecord": self._put_record,
            "GetRecords": self._get_records,
            "GetShardIterator": self._get_shard_iterator,
        }
        for name in _RESHARDING:
            self._handlers[name] = self._reshard

    # --- public surface -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; raises RuntimeError before :meth:`start`."""
        if self._url is None:
            raise RuntimeError("FaultProxy is not started: use `async with FaultProxy(...)`")
        return self._url

    @property
    def config(self) -> FaultConfig:
        """The faults in force now."""
        return self._config

    @property
    def counts(self) -> Mapping[str, int]:
        """A snapshot of what happened so far; every key of :data:`COUNTS` is present."""
        snapshot = dict(self._counts)
        snapshot["shard_map_refreshes"] = self._maps.refreshes
        return snapshot

    def configure(self, **options: Any) -> None:
        """Change faults at runtime: any option of the constructor but ``port``.

        ``seed`` restarts the random sequence. Applies to requests from now on (and
        releases stalled requests when ``stall`` turns off); raises TypeError for an
        unknown option and TypeError/ValueError for an invalid value, changing nothing.
        """
        if "port" in options:
            raise TypeError("port cannot change while the proxy runs")
        seed = options.pop("seed", None) if "seed" in options else _NO_SEED
        unknown = set(options) - _FIELDS
        if unknown:
            raise TypeError(f"unknown FaultProxy option(s): {', '.join(sorted(unknown))}")
        if (
            seed is not _NO_SEED
            and seed is not None
            and (not isinstance(seed, int) or isinstance(seed, bool))
        ):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        new = dataclasses.replace(self._config, **options)
        old, self._config = self._config, new
        if seed is not _NO_SEED:
            self._rng.seed(seed)
        if new.limits != old.limits or new.enforce_write_limits != old.enforce_write_limits:
            self._write_budgets.clear()
        if new.limits != old.limits or new.enforce_read_limits != old.enforce_read_limits:
            self._read_budgets.clear()
        log.debug("fault proxy %s configured: %s", self._url, new)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def start(self) -> FaultProxy:
        """Bind 127.0.0.1 and serve. Raises RuntimeError if already started, OSError if the
        port is taken. Cancellation leaves nothing running."""
        if self._started:
            raise RuntimeError("FaultProxy can be started once")
        self._started = True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
        )
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        try:
            await self._runner.setup()
            site = web.TCPSite(self._runner, LOOPBACK, self._port)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        port = self._runner.addresses[0][1]
        self._url = f"http://{LOOPBACK}:{port}"
        log.info("fault proxy %s -> %s", self._url, self._upstream)
        return self

    async def aclose(self) -> None:
        """Stop serving: reset held and in-flight requests, close every connection.

        Idempotent; never hangs (shielded from cancellation, bounded by a few seconds).
        """
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            tasks = [t for t in self._inflight if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()
        log.info("fault proxy %s closed: %s", self._url, self.counts)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FaultProxy(url={self._url!r}, upstream={self._upstream!r}, {self._config})"

    # --- request flow -------------------------------------------------------------------

    def _bump(self, key: str, n: int = 1) -> None:
        self._counts[key] += n

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await self._serve(request)
        except asyncio.CancelledError:
            if self._closing:
                _faults.reset_connection(request)
            raise
        except _Unreachable:
            self._bump("upstream_unreachable")
            _faults.reset_connection(request)
            return _faults.dropped()
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()
        self._bump("requests")
        if self._closing:
            _faults.reset_connection(request)
            return _faults.dropped()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        fault: _RequestFault | None = None
        if self._config.applies_to(operation):
            if self._config.stall:
                await self._hold()
                if self._closing:
                    _faults.reset_connection(request)
                    return _faults.dropped()
            latency = self._config.latency
            if latency > 0:
                self._bump("delayed")
                await asyncio.sleep(latency)
            fault = self._draw_request_fault()
            if fault == "reset_before":
                self._bump("resets_before")
                log.debug("reset before forwarding %s", operation)
                _faults.reset_connection(request)
                return _faults.dropped()
            if fault == "5xx":
                self._bump("errors_5xx")
                if self._rng.random() < 0.5:
                    return _faults.error_response(
                        500, INTERNAL_FAILURE, _faults.INTERNAL_FAILURE_MESSAGE
                    )
                return _faults.error_response(
                    503, _faults.SERVICE_UNAVAILABLE, _faults.SERVICE_UNAVAILABLE_MESSAGE
                )
        handler = self._handlers.get(operation, self._plain)
        response, applied = await handler(request, body, operation)
        if fault == "reset_after":
            self._bump("resets_after")
            self._bump("reset_after_entries", applied)
            log.debug("reset after %s applied %d entries", operation, applied)
            _faults.reset_connection(request)
            return _faults.dropped()
        return response

    async def _hold(self) -> None:
        self._bump("stalled")
        while self._config.stall and not self._closing:
            await self._changed.wait()

    def _draw_request_fault(self) -> _RequestFault | None:
        c = self._config
        if c.reset_before_fraction + c.error_5xx_fraction + c.reset_after_fraction <= 0:
            return None
        r = self._rng.random()
        if r < c.reset_before_fraction:
            return "reset_before"
        r -= c.reset_before_fraction
        if r < c.error_5xx_fraction:
            return "5xx"
        r -= c.error_5xx_fraction
        return "reset_after" if r < c.reset_after_fraction else None

    def _draw_entry_fault(self) -> str | None:
        c = self._config
        r = self._rng.random()
        if r < c.throttle_fraction:
            return THROTTLED
        if r < c.throttle_fraction + c.internal_failure_fraction:
            return INTERNAL_FAILURE
        return None

    async def _forward(
        self, request: web.BaseRequest, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        self._bump("forwarded")
        try:
            async with self._session.request(
                request.method,
                self._upstream + request.raw_path,
                data=body,
                headers=_faults.copy_headers(request.headers),
                allow_redirects=False,
            ) as resp:
                data = await resp.read()
                status, headers = resp.status, _faults.copy_headers(resp.headers)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            log.warning("upstream %s unreachable: %r", self._upstream, exc)
            raise _Unreachable from exc
        if status >= 400:
            self._bump("upstream_errors")
        return status, headers, data

    async def _plain(self, request: web.BaseRequest, body: bytes, operation: str) -> _Outcome:
        return _relay(*await self._forward(request, body)), 0

    async def _reshard(self, request: web.BaseRequest, body: bytes, operation: str) -> _Outcome:
        status, headers, data = await self._forward(request, body)
        located = _stream_of(_parse(body))
        if located is not None:
            self._maps.mark_stale(located[0])
        return _relay(status, headers, data), 0

    # --- writes -------------------------------------------------------------------------

    async def _fetch_shards(
        self, params: dict[str, str], client_headers: Mapping[str, str]
    ) -> _faults.ShardRanges | None:
        assert self._session is not None
        headers = {k: client_headers[k] for k in _faults.SIGNING_HEADERS if k in client_headers}
        headers["Content-Type"] = _faults.AMZ_JSON
        headers["X-Amz-Target"] = "Kinesis_20131202.ListShards"
        shards: list[Shard] = []
        query: dict[str, str] = dict(params)
        while True:
            try:
                async with self._session.post(
                    self._upstream + "/", data=orjson.dumps(query), headers=headers
                ) as resp:
                    status, data = resp.status, await resp.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                log.warning("ListShards on %s failed: %r", self._upstream, exc)
                return None
            page = _parse(data) if status == 200 else None
            if page is None:
                log.debug("ListShards %s answered %s: %r", params, status, data[:200])
                return None
            shards.extend(Shard.from_api(item) for item in page.get("Shards", ()))
            token = page.get("NextToken")
            if not token:
                return _faults.ShardRanges(shards)
            query = {"NextToken": token}

    def _write_budget(self, stream: str, shard: str, now: float) -> _faults.WriteBudget:
        budget = self._write_budgets.get((stream, shard))
        if budget is None:
            limits = self._config.limits
            budget = _faults.WriteBudget(
                limits.shard_write_records_per_s, limits.shard_write_bytes_per_s, now
            )
            self._write_budgets[(stream, shard)] = budget
        return budget

    async def _put_records(self, request: web.BaseRequest, body: bytes, operation: str) -> _Outcome:
        doc = _parse(body)
        located = _stream_of(doc)
        records = doc.get("Records") if doc is not None else None
        if located is None or not _faults.valid_entries(records):
            return await self._plain(request, body, operation)  # the upstream validates
        assert isinstance(records, list)
        stream, params = located
        c = self._config
        n = len(records)
        self._bump("put_entries", n)
        faults: dict[int, str] = {}
        if c.throttle_fraction + c.internal_failure_fraction > 0:
            for i in range(n):
                code = self._draw_entry_fault()
                if code is not None:
                    faults[i] = code
        predicted: dict[int, str] = {}
        ranges = self._maps.cached(stream)
        if c.enforce_write_limits:
            ranges = await self._maps.get(stream, params, request.headers)
            now = time.monotonic()
            for i, record in enumerate(records):
                key = _faults.hash_key(record)
                shard = ranges.shard_for(key) if ranges is not None and key is not None else None
                if shard is None:
                    continue
                predicted[i] = shard
                if i not in faults and not self._write_budget(stream, shard, now).take(
                    _faults.entry_size(record), now
                ):
                    faults[i] = THROTTLED
                    self._bump("write_limited_entries")
        errors = {
            i: self._entry_error(code, stream, records[i], ranges) for i, code in faults.items()
        }
        throttled = sum(1 for code in faults.values() if code == THROTTLED)
        self._bump("throttled_entries", throttled)
        self._bump("internal_failure_entries", len(faults) - throttled)
        if len(faults) == n:
            answer = {"FailedRecordCount": n, "Records": [errors[i] for i in range(n)]}
            return _faults.json_response(orjson.dumps(answer)), 0
        if faults:
            kept = [r for i, r in enumerate(records) if i not in faults]
            body = orjson.dumps({**doc, "Records": kept}) if doc is not None else body
        status, headers, data = await self._forward(request, body)
        out = _parse(data) if status == 200 else None
        answered = out.get("Records") if out is not None else None
        if out is None or not isinstance(answered, list) or len(answered) != n - len(faults):
            if status == 200:
                log.warning("unexpected PutRecords answer from upstream: %r", data[:200])
            return _relay(status, headers, data), 0
        forwarded = [i for i in range(n) if i not in faults]
        applied = 0
        for i, entry in zip(forwarded, answered, strict=True):
            if isinstance(entry, dict) and entry.get("SequenceNumber"):
                applied += 1
                if i in predicted and entry.get("ShardId") not in (None, predicted[i]):
                    self._maps.mark_stale(stream)
        self._bump("written_entries", applied)
        if not faults:
            return _relay(status, headers, data), applied
        merged = iter(answered)
        out["Records"] = [errors[i] if i in errors else next(merged) for i in range(n)]
        out["FailedRecordCount"] = int(out.get("FailedRecordCount") or 0) + len(faults)
        return _faults.json_response(orjson.dumps(out), headers), applied

    def _entry_error(
        self, code: str, stream: str, record: Mapping[str, Any], ranges: _faults.ShardRanges | None
    ) -> dict[str, str]:
        if code != THROTTLED:
            return {"ErrorCode": code, "ErrorMessage": _faults.INTERNAL_FAILURE_MESSAGE}
        key = _faults.hash_key(record)
        shard = ranges.shard_for(key) if ranges is not None and key is not None else None
        return {"ErrorCode": code, "ErrorMessage": _faults.throttle_message(stream, shard)}

    async def _put_record(self, request: web.BaseRequest, body: bytes, operation: str) -> _Outcome:
        doc = _parse(body)
        located = _stream_of(doc)
        if doc is None or located is None or not isinstance(doc.get("PartitionKey"), str):
            return await self._plain(request, body, operation)
        stream, params = located
        c = self._config
        self._bump("put_entries")
        code = (
            self._draw_entry_fault() if c.throttle_fraction + c.internal_failure_fraction else None
        )
        shard: str | None = None
        ranges = self._maps.cached(stream)
        if c.enforce_write_limits:
            ranges = await self._maps.get(stream, params, request.headers)
        key = _faults.hash_key(doc)
        if ranges is not None and key is not None:
            shard = ranges.shard_for(key)
        if code is None and c.enforce_write_limits and shard is not None:
            now = time.monotonic()
            if not self._write_budget(stream, shard, now).take(_faults.entry_size(doc), now):
                code = THROTTLED
                self._bump("write_limited_entries")
        if code == THROTTLED:
            self._bump("throttled_entries")
            message = _faults.throttle_message(stream, shard)
            return _faults.error_response(400, THROTTLED, message), 0
        if code == INTERNAL_FAILURE:
            self._bump("internal_failure_entries")
            message = _faults.INTERNAL_FAILURE_MESSAGE
            return _faults.error_response(500, INTERNAL_FAILURE, message), 0
        status, headers, data = await self._forward(request, body)
        out = _parse(data) if status == 200 else None
        applied = 1 if out is not None and out.get("SequenceNumber") else 0
        self._bump("written_entries", applied)
        if applied and shard is not None and out is not None and out.get("ShardId") != shard:
            self._maps.mark_stale(stream)
        return _relay(status, headers, data), applied

    # --- reads --------------------------------------------------------------------------

    async def _get_shard_iterator(
        self, request: web.BaseRequest, body: bytes, operation: str
    ) -> _Outcome:
        status, headers, data = await self._forward(request, body)
        doc = _parse(body)
        located = _stream_of(doc)
        out = _parse(data) if status == 200 else None
        if out is not None and doc is not None and located is not None:
            shard = doc.get("ShardId")
            if isinstance(shard, str):
                self._iterators.add(out.get("ShardIterator"), (located[0], shard))
        return _relay(status, headers, data), 0

    async def _get_records(self, request: web.BaseRequest, body: bytes, operation: str) -> _Outcome:
        c = self._config
        self._bump("get_records")
        doc = _parse(body)
        where = self._iterators.get(doc.get("ShardIterator") if doc is not None else None)
        stream, shard = where if where is not None else ("", None)
        if c.expire_iterator_fraction + c.read_throttle_fraction > 0:
            r = self._rng.random()
            if r < c.expire_iterator_fraction:
                self._bump("expired_iterators")
                message = _faults.expired_message()
                return _faults.error_response(400, _faults.EXPIRED_ITERATOR, message), 0
            if r < c.expire_iterator_fraction + c.read_throttle_fraction:
                self._bump("read_throttled")
                message = _faults.throttle_message(stream, shard)
                return _faults.error_response(400, THROTTLED, message), 0
        budget: _faults.ReadBudget | None = None
        if c.enforce_read_limits and where is not None:
            now = time.monotonic()
            budget = self._read_budgets.get(where)
            if budget is None:
                budget = _faults.ReadBudget(
                    c.limits.shard_read_calls_per_s, c.limits.shard_read_bytes_per_s, now
                )
                self._read_budgets[where] = budget
            if not budget.admit(now):
                self._bump("read_throttled")
                self._bump("read_limited")
                message = _faults.throttle_message(stream, shard)
                return _faults.error_response(400, THROTTLED, message), 0
        status, headers, data = await self._forward(request, body)
        out = _parse(data) if status == 200 else None
        if out is not None:
            records = out.get("Records")
            if isinstance(records, list):
                self._bump("read_records", len(records))
                if budget is not None:
                    budget.bytes.spend(
                        sum(_faults.b64_size(r.get("Data")) for r in records if isinstance(r, dict))
                    )
            if where is not None:
                self._iterators.add(out.get("NextShardIterator"), where)
        return _relay(status, headers, data), 0


_NO_SEED: Any = object()


# --- command line -----------------------------------------------------------------------


def serve_forever(
    proxy: FaultProxy,
    announce: Callable[[str], None],
    summary: Callable[[Mapping[str, int]], None] | None = None,
) -> None:
    """Run ``proxy`` (not yet started) in a new event loop until SIGINT or SIGTERM.

    ``announce(url)`` is called once it listens; ``summary(counts)`` when it stops.
    KeyboardInterrupt propagates after the proxy closed.
    """

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Windows
            pass
        try:
            async with proxy:
                announce(proxy.url)
                await stop.wait()
        finally:
            if summary is not None:
                summary(proxy.counts)

    asyncio.run(run())
