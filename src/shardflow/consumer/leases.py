"""DynamoDBLeases: N consumer processes share a stream's shards through a KCL lease table.

Used as a :class:`~shardflow.Consumer`'s checkpointer. Each worker holds leases (one per
shard) in a DynamoDB table laid out as the Java KCL's (see :mod:`.lease_table`), so a
shard is read by one worker at a time, positions survive crashes, and shardflow and KCL
workers can share a table (the KCL's single-stream layout).

How it works, per binding (one consumer = one worker):

- **Renewal**: every ``failover_time / 3`` the worker increments ``leaseCounter`` of each
  lease it holds, conditional on owner and counter, on a DynamoDB client of its own, with
  as many renewals in flight as it takes to renew every lease within half that interval
  at the latency measured (up to 256: 4,000 leases at 50 ms renew in 1.6 s). A
  failed condition means the lease was taken: the shard is revoked at once. If no
  renewal succeeded for ``failover_time`` (measured from when that renewal was sent),
  the shard is stopped as well, since others may consider the lease expired; it restarts
  if a later renewal still succeeds.
- **Balancing** (DynamoDBLeaseTaker's rules): every ``2 x (failover_time + 0.025)``
  seconds, jittered by +-20 %, the worker scans the whole table. A lease is expired when
  its counter has not changed for ``failover_time`` on this worker's monotonic clock;
  unowned leases are free at once. The target is ceil(leases / workers), workers being
  the owners of unexpired leases plus this one (SHARD_END leases count while an owner
  renews them). The worker takes free or expired leases up to the target; otherwise it
  steals one lease from the most loaded worker when that worker is above the target, or
  at it while this worker needs more than one. A worker above the target releases what
  the workers below it lack, so a group converges to max - min <= 1 leases per worker in
  a few cycles from any start (see :mod:`.lease_policy`).
- **Expiry watch**: every ``failover_time / 3`` the worker reads two parallel-scan
  segments of the table (with W workers, W segments, each read by two workers; the whole
  table while there are at most two workers) and takes a dead worker's leases found
  there, so they are owned again within about 1.5 x ``failover_time``.
- **Lease creation**: a listed shard gets a lease once its parents are done. A worker
  that finds the table empty waits a random time (up to ``failover_time / 2``) and
  creates the leases only if nobody has started meanwhile; a lease found missing later
  is created once it has been missing for ``failover_time`` and the table stopped
  growing; creating stops at the first lease someone else created. Planning is linear
  in shards.
- **Checkpoints** are conditional on owner and counter: a worker that lost a lease gets
  :class:`errors.LeaseLost` and the shard is revoked (nothing more is delivered from it).
- **Graceful close**: the consumer writes its pending checkpoints, then the binding ends
  and releases every lease (``leaseOwner`` removed, as the KCL's eviction does), so other
  workers take them at their next scan instead of waiting for expiry.
- **Resharding**: a listed shard gets a lease once all its parents are done; a parent
  reaching SHARD_END writes its ``childShardIds``, creates its children's leases and is
  released. A shard is granted only when each parent's lease is at SHARD_END.

Lease keys: by default the table is dedicated to one application reading one stream,
and the lease key is the shard id (what the KCL writes); binding another application or
stream to a table holding leases of a different one raises
:class:`errors.LeaseTableConflict`. With ``shared_table=True`` lease keys are
``"{app_name}:{stream_name}:{shardId}"`` and any number of applications and streams share
the table (such keys are shardflow's own; the KCL does not read them).

Under ``start_at="LATEST"``, a shard already closed when its lineage first gets a lease
is recorded at SHARD_END without being read, and its children are read from their start.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from .._core import aws as _aws
from .._core import metrics as _metrics
from .._core.validate import check_bool, check_number, shown
from ._metrics import lease_metrics
from .checkpoint import AssignmentListener, CheckpointSession, ConsumerScope
from .lease_session import RENEW_CONCURRENCY, WRITE_CONCURRENCY, LeaseSession
from .lease_table import KeyScheme, LeaseTable

__all__ = ["DynamoDBLeases"]

MIN_FAILOVER_TIME = 0.5
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


class DynamoDBLeases:
    """A consumer group's checkpointer: KCL-compatible leases in a DynamoDB table.

    ``table`` is created on first use when missing (on-demand billing, hash key
    ``leaseKey``) or used as it is. ``worker_id`` names this worker in ``leaseOwner``
    (default: host name, process id and a random suffix); it must be unique among live
    workers. ``failover_time`` is how long a lease may go without renewal before others
    take it; renewals run every third of it (see the module docs). ``shared_table=True`` lets
    several applications and streams share the table (keys ``app:stream:shardId``).
    DynamoDB is reached through ``endpoint_url`` / ``region_name`` / ``credentials``, or
    an injected aiobotocore ``client`` (left open). ``meter_provider``: an OpenTelemetry
    MeterProvider for the group's metrics (leases owned, total, workers; default: the
    global one when OpenTelemetry is installed).

    One instance is one worker: give each consumer process its own. An instance may be
    bound by consumers of different applications or streams at once (with
    ``shared_table=True``), not twice to the same one. See the module documentation.
    """

    def __init__(
        self,
        table: str,
        *,
        worker_id: str | None = None,
        failover_time: float = 10.0,
        shared_table: bool = False,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        credentials: _aws.CredentialSource | None = None,
        meter_provider: Any = None,
    ) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise ValueError(
                "table must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), "
                f"got {shown(table)}"
            )
        if worker_id is None:
            worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if not isinstance(worker_id, str) or not worker_id.strip() or len(worker_id) > 1024:
            raise ValueError(f"worker_id must be a non-empty string, got {shown(worker_id)}")
        failover_time = check_number(
            "failover_time", failover_time, minimum=MIN_FAILOVER_TIME, unit="seconds"
        )
        check_bool("shared_table", shared_table)
        if credentials is not None and not isinstance(credentials, _aws.CredentialSource):
            raise TypeError("credentials must provide botocore_credentials()")
        _aws.check_endpoint(endpoint_url, region_name)
        self._table = table
        self._worker_id = worker_id
        self._failover = failover_time
        self._shared = shared_table
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client = client
        self._credentials = credentials
        self._bound: set[tuple[str, str]] = set()
        self._meter = _metrics.meter(meter_provider)

    def __repr__(self) -> str:
        return (
            f"DynamoDBLeases({self._table!r}, worker_id={self._worker_id!r}, "
            f"failover_time={self._failover})"
        )

    @property
    def table(self) -> str:
        return self._table

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def failover_time(self) -> float:
        return self._failover

    @property
    def shared_table(self) -> bool:
        return self._shared

    def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AbstractAsyncContextManager[CheckpointSession]:
        """Join the group for ``scope``'s application and stream (see the module docs).

        Entering creates the table if needed and scans it; it raises
        errors.LeaseTableConflict, errors.AccessDenied and other errors.AWSError
        subclasses, and RuntimeError when this instance is already bound to that
        application and stream. Leaving releases the held leases (shielded, within
        failover_time).
        """
        return self._binding(scope, listener)

    @asynccontextmanager
    async def _binding(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AsyncIterator[CheckpointSession]:
        name = (scope.app_name, scope.stream_name)
        if name in self._bound:
            raise RuntimeError(
                f"{self!r} is already bound to application {name[0]!r} on stream {name[1]!r}; "
                "each worker needs its own DynamoDBLeases"
            )
        self._bound.add(name)
        stack = AsyncExitStack()
        try:
            options: dict[str, Any] = dict(
                endpoint_url=self._endpoint_url,
                region_name=self._region_name,
                client=self._client,
                credentials=self._credentials,
                connect_timeout=min(5.0, self._failover),
                read_timeout=max(5.0, self._failover),
            )
            client = await _aws.open_client(
                stack, "dynamodb", max_pool_connections=WRITE_CONCURRENCY + 8, **options
            )
            # Renewals and checkpoints on their own connections (an injected client is
            # shared): a worker holding thousands of leases renews them all in time.
            holder_client = await _aws.open_client(
                stack, "dynamodb", max_pool_connections=RENEW_CONCURRENCY + 16, **options
            )
            table = LeaseTable(
                client,
                self._table,
                KeyScheme.for_scope(scope.app_name, scope.stream_name, shared=self._shared),
                scope=f"{scope.app_name}:{scope.stream_name}",
                owner=self._worker_id,
                holder_client=holder_client,
            )
            await table.ensure()
            session = LeaseSession(table, scope, listener, self._failover)
            if self._meter is not None:
                lease_metrics(session, self._meter, self._table, *name)
            await session.start()
            async with anyio.create_task_group() as tg:
                await session.run(tg)
                try:
                    yield session
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self._failover):
                        await session.release_all()
        finally:
            self._bound.discard(name)
            with anyio.CancelScope(shield=True):
                await stack.aclose()
