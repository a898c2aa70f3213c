"""Fault injection for tests: a Kinesis proxy that throttles, fails, resets and stalls.

No local Kinesis endpoint (moto, kinesalite) throttles or fails part of a batch, yet real
Kinesis does both every day. :class:`FaultProxy` is an HTTP proxy on 127.0.0.1 in front of
any Kinesis endpoint (moto, kinesalite, anything that speaks the AWS JSON 1.1 protocol).
It forwards requests unchanged, except where a fault rewrites or replaces them, and its
errors look exactly like AWS's, so botocore and hand-written clients react as they would
against the real service. It runs in the event loop that starts it: create it in the
test (or in a fixture on the test's loop), not in a fixture on another loop::

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
  answer puts the shard in debt until refilled, as AWS does. Shards are known for
  iterators obtained through the proxy (GetShardIterator, then each NextShardIterator).
- ``expire_iterator_fraction`` / ``read_throttle_fraction``: per GetRecords call,
  ``ExpiredIteratorException`` / ``ProvisionedThroughputExceededException`` (not
  forwarded). As on AWS, an expired iterator stays expired: only a new GetShardIterator
  gets the reader going again.
- Enhanced fan-out: ``subscription_in_use_fraction`` / ``subscription_limit_fraction``:
  per SubscribeToShard call, ``ResourceInUseException`` / ``LimitExceededException``
  (not forwarded); ``cut_subscription_after``: each subscription's event stream is cut
  (connection reset) after that many events, as when a network path breaks mid-way;
  ``fail_subscription_after``: each subscription ends after that many events with an
  ``InternalFailureException`` exception event, as AWS ends a failing one.
  Events are relayed as they come (the stream is not buffered).
- Request level, for the operations in ``operations`` (default: PutRecord, PutRecords,
  GetRecords; ``{"*"}`` means every operation): ``error_5xx_fraction`` (500
  ``InternalFailure`` or 503 ``ServiceUnavailable``, not forwarded),
  ``reset_before_fraction`` (the connection is reset, nothing forwarded),
  ``reset_after_fraction`` (forwarded and applied upstream, then the connection is reset:
  the client cannot know it succeeded, and a retry writes duplicates), ``latency``
  (seconds added), ``stall`` (requests are accepted and never answered, until
  ``configure(stall=False)`` releases them or the proxy closes and resets them).

With a ``seed``, one ``random.Random(seed)`` makes every choice, so a test that sends the
same requests in the same order sees the same faults.

``proxy.counts`` tells what happened (:data:`COUNTS` describes each key): ``requests``,
``forwarded``, ``put_entries``, ``written_entries``, ``throttled_entries`` (of which
``write_limited_entries``), ``internal_failure_entries``, ``errors_5xx``,
``resets_before``, ``resets_after``, ``reset_after_entries`` (records written upstream
whose answer was dropped: the only source of duplicates), ``delayed``, ``stalled``,
``get_records``, ``read_records``, ``expired_iterators``, ``read_throttled`` (of which
``read_limited``), ``upstream_errors``, ``upstream_unreachable``, ``shard_map_refreshes``,
``subscriptions``, ``subscriptions_in_use``, ``subscriptions_limited``,
``subscription_events``, ``subscriptions_cut``, ``subscriptions_failed``,
``subscriptions_closed``.

Per-entry faults rewrite request bodies, which breaks SigV4 signatures: use them in front
of local endpoints (they ignore signatures), not in front of AWS itself.

From a synchronous test or another process, run ``shardflow proxy --upstream URL
[--throttle 0.2 ...]``: it prints its URL on the first line of standard output and runs
until Ctrl-C (``shardflow proxy --help`` lists the options).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import orjson
from aiohttp import web

from .._core.validate import shown
from ..errors import InvalidShardMap
from ..limits import KinesisLimits
from ..models import Shard
from ..shardmap import ShardMap
from . import _faults
from ._fault_ops import COUNTS as COUNTS
from ._fault_ops import KEEP_SEED, FaultEngine, Reply
from ._fault_ops import FaultConfig as FaultConfig

__all__ = ["COUNTS", "FaultConfig", "FaultProxy", "serve_forever"]

log = logging.getLogger("shardflow.testing")

LOOPBACK = "127.0.0.1"

_UPSTREAM_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _Unreachable(Exception):
    """The upstream call failed; the client's connection is reset."""


class FaultProxy:
    """A fault-injecting Kinesis proxy on 127.0.0.1 (see :mod:`shardflow.testing`).

    Use as ``async with FaultProxy(url, ...) as proxy`` (or ``await proxy.start()`` and
    ``await proxy.aclose()``) and send requests to :attr:`url`. Options are the fields of
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
        subscription_in_use_fraction: float = 0.0,
        subscription_limit_fraction: float = 0.0,
        cut_subscription_after: int | None = None,
        fail_subscription_after: int | None = None,
    ) -> None:
        parts = urlsplit(upstream_url) if isinstance(upstream_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream_url must be an http(s) URL, got {shown(upstream_url)}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int between 0 and 65535, got {shown(port)}")
        _check_seed(seed)
        config = FaultConfig(
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
            subscription_in_use_fraction=subscription_in_use_fraction,
            subscription_limit_fraction=subscription_limit_fraction,
            cut_subscription_after=cut_subscription_after,
            fail_subscription_after=fail_subscription_after,
        )
        self._upstream = upstream_url.rstrip("/")
        self._port = port
        self._engine = FaultEngine(config, seed, self._list_shards)
        self._changed = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        self._started = False
        self._closing = False

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
        return self._engine.config

    @property
    def counts(self) -> Mapping[str, int]:
        """A snapshot of what happened so far; every key of :data:`COUNTS` is present."""
        return self._engine.snapshot()

    def configure(self, **options: Any) -> None:
        """Change faults at runtime: any option of the constructor but ``port``.

        ``seed`` restarts the random sequence; changing ``limits`` or turning a limit on
        starts with full budgets. Applies to requests from now on, and releases stalled
        requests when ``stall`` turns off. Raises TypeError for an unknown option and
        TypeError/ValueError for an invalid value, changing nothing.
        """
        if "port" in options:
            raise TypeError("port cannot change while the proxy runs")
        seed = options.pop("seed", KEEP_SEED)
        if seed is not KEEP_SEED:
            _check_seed(seed)
        self._engine.configure(seed, options)
        log.debug("fault proxy %s configured: %s", self._url, self._engine.config)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def start(self) -> FaultProxy:
        """Bind 127.0.0.1 and serve. Raises RuntimeError if already started, OSError if the
        port is taken. On failure or cancellation nothing is left running."""
        if self._started:
            raise RuntimeError("FaultProxy can be started once")
        self._started = True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
        )
        self._runner = web.ServerRunner(
            web.Server(self._handle, access_log=None), shutdown_timeout=1.0
        )
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
        return f"FaultProxy(url={self._url!r}, upstream={self._upstream!r}, {self.config})"

    # --- requests -----------------------------------------------------------------------

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
            self._engine.bump("upstream_unreachable")
            return _reset(request)
        except ConnectionError:  # the client went away (upstream errors are _Unreachable)
            log.debug("client of %s disconnected", self._url)
            return _reset(request)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            # botocore sends S3 uploads with Expect: 100-continue and waits for this.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await request.content.read()
        engine = self._engine
        engine.bump("requests")
        if self._closing:
            return _reset(request)
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        if operation == "SubscribeToShard":
            return await self._subscribe(request, body)
        fault = None
        if engine.config.applies_to(operation):
            if engine.config.stall:
                engine.bump("stalled")
                while engine.config.stall and not self._closing:
                    await self._changed.wait()
                if self._closing:
                    return _reset(request)
            latency = engine.config.latency
            if latency > 0:
                engine.bump("delayed")
                await asyncio.sleep(latency)
            fault = engine.request_fault()
            if fault == "reset_before":
                engine.bump("resets_before")
                log.debug("reset before forwarding %s", operation)
                return _reset(request)
            if fault == "5xx":
                return engine.error_5xx()

        async def forward(data: bytes) -> Reply:
            return await self._forward(request, data)

        response, applied = await engine.handle(operation, body, request.headers, forward)
        if fault == "reset_after":
            engine.bump("resets_after")
            engine.bump("reset_after_entries", applied)
            log.debug("reset after %s wrote %d records", operation, applied)
            return _reset(request)
        return response

    async def _forward(self, request: web.BaseRequest, body: bytes) -> Reply:
        assert self._session is not None
        self._engine.bump("forwarded")
        try:
            async with self._session.request(
                request.method,
                self._upstream + request.raw_path,
                data=body,
                headers=_faults.copy_headers(request.headers),
                allow_redirects=False,
            ) as resp:
                reply = Reply(resp.status, _faults.copy_headers(resp.headers), await resp.read())
        except _UPSTREAM_ERRORS as exc:
            log.warning("upstream %s unreachable: %r", self._upstream, exc)
            raise _Unreachable from exc
        if reply.status >= 400:
            self._engine.bump("upstream_errors")
        return reply

    async def _subscribe(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        """SubscribeToShard: refused by a fault, or its event stream relayed as it comes
        (cut after ``cut_subscription_after`` events, failed after
        ``fail_subscription_after``)."""
        engine = self._engine
        refused = engine.subscription_fault()
        if refused is not None:
            return refused
        assert self._session is not None
        engine.bump("forwarded")
        try:
            async with self._session.post(
                self._upstream + request.raw_path,
                data=body,
                headers=_faults.copy_headers(request.headers),
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    engine.bump("upstream_errors")
                    return Reply(
                        resp.status, _faults.copy_headers(resp.headers), await resp.read()
                    ).response()
                answer = web.StreamResponse(status=200, headers=_faults.copy_headers(resp.headers))
                try:
                    return await self._relay(request, resp, answer)
                finally:
                    engine.bump("subscriptions_closed")
        except ConnectionError:  # the client went away (answer.write): not the upstream
            raise
        except _UPSTREAM_ERRORS as exc:
            log.warning("upstream %s unreachable: %r", self._upstream, exc)
            raise _Unreachable from exc

    async def _relay(
        self, request: web.BaseRequest, resp: aiohttp.ClientResponse, answer: web.StreamResponse
    ) -> web.StreamResponse:
        """Relay one subscription's events to the client, applying the stream faults."""
        from ..consumer._transport import EventStreamDecoder, encode_message

        engine = self._engine
        await answer.prepare(request)
        decoder = EventStreamDecoder()
        events = 0
        async for chunk in resp.content.iter_any():
            cut = engine.config.cut_subscription_after
            try:
                complete = len(decoder.feed(chunk))
            except ValueError:
                complete = 0
            if cut is not None and events + complete > cut:
                engine.bump("subscriptions_cut")  # this chunk is not relayed
                log.debug("cut a subscription after %d events", cut)
                _faults.reset_connection(request)
                return answer
            fail = engine.config.fail_subscription_after
            if fail is not None and events + complete > fail:
                engine.bump("subscriptions_failed")  # this chunk is not relayed
                await answer.write(encode_message(
                    {":message-type": "exception",
                     ":exception-type": "InternalFailureException",
                     ":content-type": "application/json"},
                    b'{"message":"Internal service failure."}'))
                await answer.write_eof()
                return answer
            events += complete
            engine.bump("subscription_events", complete)
            await answer.write(chunk)
        await answer.write_eof()
        return answer

    async def _list_shards(
        self, params: dict[str, str], client_headers: Mapping[str, str]
    ) -> ShardMap | None:
        """The stream's shard map from the upstream's ListShards, None if it fails."""
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
                page = orjson.loads(data) if status == 200 else None
            except (*_UPSTREAM_ERRORS, orjson.JSONDecodeError) as exc:
                log.warning("ListShards on %s failed: %r", self._upstream, exc)
                return None
            if not isinstance(page, dict):
                log.debug("ListShards %s answered %s: %r", params, status, data[:200])
                return None
            shards.extend(Shard.from_api(item) for item in page.get("Shards", ()))
            token = page.get("NextToken")
            if not token:
                try:
                    return ShardMap(shards, require_full_coverage=False)
                except InvalidShardMap as exc:  # e.g. overlapping open shards mid-reshard
                    log.debug("no usable shard map for %s: %s", params, exc)
                    return None
            query = {"NextToken": token}


def _reset(request: web.BaseRequest) -> web.StreamResponse:
    _faults.reset_connection(request)
    return _faults.dropped()


def _check_seed(seed: object) -> None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {shown(seed)}")


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
