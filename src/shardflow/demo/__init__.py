"""``shardflow demo``: the whole pipeline, end to end, with a count of what arrived.

Simulated app users post events through a :class:`~shardflow.Collector` (a spooled
:class:`~shardflow.BufferedOutput` in a temporary folder, a
:class:`~shardflow.KinesisOutput` keyed by ``user_id``, a :class:`~shardflow.Producer`
with ``aggregate=True``) into a new stream. A consumer group of two workers (each a
:class:`~shardflow.Consumer` with its own :class:`~shardflow.DynamoDBLeases`) shares the
shards and archives every record to S3 with ``Consumer.pipe(S3Sink(...))``; on the way,
tumbling one-minute windows count events per type by event time. At the end every
archived object is read back from S3, events are deduplicated by ``event_id`` and
compared with what was posted: ``lost`` must be 0.

By default everything runs on the embedded endpoint (:func:`shardflow.local_endpoint`).
Against another endpoint or AWS itself the demo creates a stream, a bucket and a lease
table only when allowed to (``create=True``), and deletes them at the end unless
``keep=True``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

import anyio
import anyio.to_thread

from .. import errors
from .._core import aws as _aws
from .._core import resources as _resources
from .._core.validate import shown
from ..collector import BufferedOutput, Collector, KinesisOutput, add_fields
from ..producer import Producer
from ..sinks import TumblingWindows
from ._group import APP_NAME, PREFIX, Where, Worker
from ._report import (
    Console,
    Minutes,
    Summary,
    Tally,
    format_progress,
    percentile,
    read_archive,
)

__all__ = ["DemoNotAllowed", "DemoOptions", "describe_endpoint", "run_demo"]

log = logging.getLogger("shardflow.demo")

WORKERS = 2
WINDOW = 60.0
LATENESS = 5.0
"""Seconds an event may trail the newest one seen and still count in its minute."""
EVENT_TYPES: tuple[tuple[str, int], ...] = (
    ("view", 60),
    ("click", 25),
    ("add_to_cart", 8),
    ("purchase", 4),
    ("login", 3),
)


class DemoNotAllowed(ValueError):
    """The demo would create resources somewhere other than the embedded endpoint."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``shardflow demo`` runs; see ``shardflow demo --help``."""

    events: int = 20_000
    shards: int = 4
    users: int = 1_000
    endpoint_url: str | None = None
    """None: the embedded endpoint, unless ``use_aws``."""
    use_aws: bool = False
    region_name: str | None = None
    create: bool = False
    """Allow creating a stream, a bucket and a table on a non-embedded endpoint."""
    keep: bool = False
    """Keep what the demo created on a non-embedded endpoint."""
    progress: bool = True
    seed: int = 7

    def __post_init__(self) -> None:
        for name, low, high in (
            ("events", 1, 10_000_000),
            ("shards", 1, 64),
            ("users", 1, 1_000_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"{name} must be a whole number from {low:,} to {high:,}, got {shown(value)}"
                )
        if self.use_aws and self.endpoint_url:
            raise ValueError("use either --endpoint-url or --aws, not both")

    @property
    def remote(self) -> bool:
        """True unless the demo runs on the embedded endpoint."""
        return self.use_aws or self.endpoint_url is not None


def describe_endpoint(options: DemoOptions, endpoint_url: str | None) -> str:
    if options.use_aws:
        return f"AWS ({options.region_name or 'region from the AWS configuration'})"
    if options.remote:
        return str(endpoint_url)
    return f"embedded moto server at {endpoint_url}"


async def run_demo(options: DemoOptions, endpoint_url: str | None) -> Summary:
    """Run the pipeline against ``endpoint_url`` (None: AWS) and return the summary.

    Raises :class:`DemoNotAllowed` for a non-embedded endpoint without ``create``, and
    errors.ShardflowError subclasses when a service refuses (credentials, limits).
    Whatever it created on a non-embedded endpoint is deleted unless ``keep``, also when
    it fails or is cancelled.
    """
    where_text = describe_endpoint(options, endpoint_url)
    if options.remote and not options.create:
        raise DemoNotAllowed(
            f"the demo creates a Kinesis stream ({options.shards} shards), an S3 bucket and "
            f"a DynamoDB table at {where_text}; pass --create to allow it (they are deleted "
            "at the end unless --keep is given)"
        )
    wall = time.monotonic()
    name = f"shardflow-demo-{uuid.uuid4().hex[:10]}"
    where = Where(name, name, f"{name}-leases", endpoint_url, options.region_name)
    console = Console(options.progress)
    async with AsyncExitStack() as stack:
        clients = {
            service: await _aws.open_client(
                stack, service, endpoint_url=endpoint_url, region_name=options.region_name
            )
            for service in ("kinesis", "s3", "dynamodb")
        }
        if options.remote and not options.keep:
            stack.push_async_callback(_clean_up, clients, where)
        console.say(
            f"stream {name} ({options.shards} shards), bucket {name}, lease table "
            f"{where.table} on {where_text}"
        )
        await console.drain()
        await _resources.create_stream(clients["kinesis"], name, options.shards)
        await _resources.create_bucket(clients["s3"], name)
        summary = await _Run(options, where, console).run(clients["s3"])
    return replace(summary, wall_seconds=time.monotonic() - wall, endpoint=where_text)


async def _clean_up(clients: Mapping[str, Any], where: Where) -> None:
    """Delete the stream, the bucket (with its objects) and the lease table; shielded."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(60):
        for what, deletion in (
            (f"stream {where.stream}", _resources.delete_stream(clients["kinesis"], where.stream)),
            (f"bucket {where.bucket}", _resources.delete_bucket(clients["s3"], where.bucket)),
            (f"table {where.table}", _resources.delete_table(clients["dynamodb"], where.table)),
        ):
            try:
                await deletion
            except errors.ShardflowError as exc:
                log.warning("could not delete %s: %s", what, exc)


# --- simulated users ---------------------------------------------------------------------


async def _user(collector: Collector, user: int, count: int, seed: int, posted: set[str]) -> None:
    rng = random.Random(seed * 1_000_003 + user)
    kinds = [kind for kind, _ in EVENT_TYPES]
    weights = [weight for _, weight in EVENT_TYPES]
    user_id = f"user-{user:05d}"
    for kind in rng.choices(kinds, weights, k=count):
        event: dict[str, Any] = {"user_id": user_id, "type": kind, "item": rng.randrange(1000)}
        if kind == "purchase":
            event["amount"] = round(rng.uniform(5, 200), 2)
        event_id = await collector.post(f"app.{kind}", event)
        if event_id is not None:
            posted.add(event_id)


def _event_type(event: Mapping[str, Any]) -> str:
    return str(event.get("type", "?"))


def _event_time(event: Mapping[str, Any]) -> float:
    return float(event["time"])


# --- the run -----------------------------------------------------------------------------


class _Run:
    """One run of the pipeline; its fields are what the progress display shows."""

    def __init__(self, options: DemoOptions, where: Where, console: Console) -> None:
        self.options = options
        self.where = where
        self.console = console
        self.tally = Tally()
        self.posted: set[str] = set()
        self.phase = "starting"
        self.minutes = Minutes(console)
        self.windows: TumblingWindows[dict[str, Any], str, int] = TumblingWindows(
            WINDOW,
            key=_event_type,
            allowed_lateness=LATENESS,
            event_time=_event_time,
            on_window=self.minutes.add,
        )
        send, self._events = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        with send:  # the workers' clones stay open until each worker has stopped
            self.workers = [
                Worker(f"worker-{i + 1}", where, self.tally, send.clone())
                for i in range(WORKERS)
            ]
        self._buffered: BufferedOutput | None = None
        self._started = time.monotonic()
        self._post_start = time.time()

    async def run(self, s3: Any) -> Summary:
        spool_dir = await anyio.to_thread.run_sync(tempfile.mkdtemp, None, "shardflow-demo-")
        try:
            post_seconds, pipeline_seconds = await self._pipeline(
                os.path.join(spool_dir, "spool.db")
            )
            self.console.say("reading the archive back from S3 ...")
            await self.console.drain()
            archive = await read_archive(s3, self.where.bucket, PREFIX)
        finally:
            await anyio.to_thread.run_sync(shutil.rmtree, spool_dir, True)
        tally = self.tally
        return Summary(
            events=self.options.events,
            users=self.options.users,
            shards=self.options.shards,
            workers=WORKERS,
            endpoint="",
            posted=len(self.posted),
            archive=archive,
            lost=len(self.posted - archive.event_ids),
            unexpected=len(archive.event_ids - self.posted),
            post_seconds=post_seconds,
            pipeline_seconds=pipeline_seconds,
            wall_seconds=0.0,
            delivery_p50=percentile(tally.delivery_latency, 0.50),
            delivery_p99=percentile(tally.delivery_latency, 0.99),
            archive_p50=percentile(tally.archive_latency, 0.50),
            archive_p99=percentile(tally.archive_latency, 0.99),
            late_events=self.windows.late_events,
            by_worker=dict(tally.by_worker),
            minutes=sorted(self.minutes.minutes.items()),
            deliveries=tally.deliveries,
            in_aggregates=tally.in_aggregates,
        )

    async def _pipeline(self, spool: str) -> tuple[float, float]:
        """Start the group, post, wait until everything is archived, stop the group.

        Returns the seconds posting took and the seconds until all was archived.
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._count_windows)  # until every worker has stopped
            for worker in self.workers:
                await tg.start(worker.run)
            async with anyio.create_task_group() as display:
                display.start_soon(self._progress)
                post_seconds = await self._post(spool)
                self._enter("archiving")
                self.tally.expect(len(self.posted))
                with anyio.move_on_after(60 + self.options.events / 500):
                    await self.tally.all_archived.wait()
                pipeline_seconds = time.time() - self._post_start
                self._enter("closing")
                with anyio.CancelScope(shield=True):
                    async with anyio.create_task_group() as closing:
                        for worker in self.workers:
                            closing.start_soon(worker.stop)
                display.cancel_scope.cancel()
        await self.windows.aclose()
        self.minutes.finish()
        return post_seconds, pipeline_seconds

    async def _post(self, spool: str) -> float:
        """Post every event through the collector; wait until all are in the stream.

        Returns the seconds posting took (until the last post() returned).
        """
        where = self.where
        self._post_start = time.time()
        async with Producer(
            where.stream,
            endpoint_url=where.endpoint_url,
            region_name=where.region_name,
            aggregate=True,
        ) as producer:
            self._buffered = BufferedOutput(
                KinesisOutput(producer, partition_key="user_id"),
                spool=spool,
                flush_interval=0.2,
                max_batch=5_000,
            )
            collector = Collector()
            collector.filter("app.**", add_fields(app=APP_NAME))
            collector.output("app.**", self._buffered)
            self._enter("posting")
            async with collector:
                share, extra = divmod(self.options.events, self.options.users)
                async with anyio.create_task_group() as users:
                    for user in range(self.options.users):
                        count = share + (1 if user < extra else 0)
                        if count:
                            users.start_soon(
                                _user, collector, user, count, self.options.seed, self.posted
                            )
                post_seconds = time.time() - self._post_start
                self._enter("sending")
                await collector.flush()
        return post_seconds

    async def _count_windows(self) -> None:
        """Feed the windows (from this one task, as they want) until the workers stop."""
        async with self._events:
            async for event in self._events:
                await self.windows.add(event)

    def _show_progress(self) -> None:
        self.console.say(
            format_progress(
                time.monotonic() - self._started,
                self.phase,
                events=self.options.events,
                posted=len(self.posted),
                sent=0 if self._buffered is None else self._buffered.stats().sent,
                tally=self.tally,
                shards={worker.name: worker.shards_reading() for worker in self.workers},
            )
        )

    def _enter(self, phase: str) -> None:
        """Start a phase; the progress line of the one ending is shown (next drain)."""
        if self.phase != "starting":
            self._show_progress()
        self.phase = phase

    async def _progress(self) -> None:
        while True:
            self._show_progress()
            await self.console.drain()
            await anyio.sleep(1.0)
