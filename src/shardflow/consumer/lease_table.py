"""The lease table: KCL-compatible lease items in DynamoDB and the conditional writes on them.

One item per shard, with the attribute names and DynamoDB types the Java KCL (2.x) uses:

==============================  ====  =================================================
``leaseKey``                    S     the shard id (hash key); ``app:stream:shardId``
                                      when the table is shared (see :class:`KeyScheme`)
``leaseOwner``                  S     worker id of the holder; absent when unowned
``leaseCounter``                N     +1 on every write by the holder (the heartbeat)
``checkpoint``                  S     a sequence number, or TRIM_HORIZON / LATEST /
                                      AT_TIMESTAMP / SHARD_END
``checkpointSubSequenceNumber`` N     user record inside a KPL aggregate (0 otherwise)
``ownerSwitchesSinceCheckpoint``N     +1 when a lease changes hands, 0 on checkpoint
``parentShardId``               SS    the shard's parents (absent when none)
``childShardIds``               SS    written on a parent when it reaches SHARD_END
``startingHashKey``             S     the shard's hash-key range, decimal
``endingHashKey``               S
``shardflowScope``              S     shardflow only: ``app:stream`` of the creator
``checkpointOwner``             S     KCL 3.x graceful hand-off: removed when taken
==============================  ====  =================================================

A KCL 3.x table also holds items that are not leases (DynamoDBLeaseSerializer's
``entityType`` rule: an item whose ``entityType`` is set and is not ``LEASE``): the leader
lock (``Leader``), the migration states (``Migration3.0``, ``TableMigration3.5``) and one
worker-metrics item per worker (keyed by the worker id). They are skipped, never written
(:func:`is_lease_item`); so is any item without the lease attributes.

Every write by a holder is conditional on ``leaseOwner`` and ``leaseCounter``, so a
worker that lost a lease can never write to it again. Only this module talks DynamoDB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from .. import errors
from .._core import aws as _aws
from .._core.logs import get_logger
from ..models import Shard

__all__ = [
    "AT_TIMESTAMP",
    "LATEST",
    "SENTINELS",
    "SHARD_END_MARK",
    "TRIM_HORIZON",
    "KeyScheme",
    "Lease",
    "LeaseTable",
    "is_lease_item",
]

log = get_logger("shardflow.consumer.leases")

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
SHARD_END_MARK = "SHARD_END"
SENTINELS = frozenset({TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END_MARK})

LEASE_KEY = "leaseKey"
LEASE_OWNER = "leaseOwner"
LEASE_COUNTER = "leaseCounter"
CHECKPOINT = "checkpoint"
CHECKPOINT_SUB = "checkpointSubSequenceNumber"
OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
PARENTS = "parentShardId"
CHILDREN = "childShardIds"
STARTING_HASH_KEY = "startingHashKey"
ENDING_HASH_KEY = "endingHashKey"
SCOPE = "shardflowScope"
CHECKPOINT_OWNER = "checkpointOwner"
ENTITY_TYPE = "entityType"
LEASE_ENTITY = "LEASE"
# Items the KCL 3.x coordinator recognises by key when they lack an entityType
# (CoordinatorStateDAODelegate.resolveEntityType).
_COORDINATOR_KEYS = frozenset({"Migration3.0", "TableMigration3.5"})
# What a KCL worker may leave behind; a checkpoint clears it, as the KCL does.
_PENDING = ("pendingCheckpoint", "pendingCheckpointSubSequenceNumber", "pendingCheckpointState")

_PLACEHOLDER = re.compile(r"#\w+")
_USABLE = ("ACTIVE", "UPDATING")
TABLE_ACTIVE_TIMEOUT = 300.0
"""How long binding waits for a table being created to become ACTIVE."""

_NAMES = {
    "#k": LEASE_KEY,
    "#o": LEASE_OWNER,
    "#c": LEASE_COUNTER,
    "#cp": CHECKPOINT,
    "#sub": CHECKPOINT_SUB,
    "#sw": OWNER_SWITCHES,
    "#ch": CHILDREN,
    "#p0": _PENDING[0],
    "#p1": _PENDING[1],
    "#p2": _PENDING[2],
    "#co": CHECKPOINT_OWNER,
}


@dataclass(frozen=True, slots=True)
class KeyScheme:
    """How shard ids become lease keys in one table.

    Dedicated (``prefix=""``, the KCL's single-stream layout): the lease key is the
    shard id. Shared: ``"{app}:{stream}:{shardId}"``, so several applications and
    streams can use one table without colliding (the KCL cannot read such a table).
    """

    prefix: str = ""

    @classmethod
    def for_scope(cls, app_name: str, stream_name: str, *, shared: bool) -> KeyScheme:
        return cls(f"{app_name}:{stream_name}:" if shared else "")

    @property
    def shared(self) -> bool:
        return bool(self.prefix)

    def key(self, shard_id: str) -> str:
        return self.prefix + shard_id

    def shard_id(self, key: str) -> str | None:
        """The shard id of ``key``, or None when the key is not this scheme's."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        return rest if rest and ":" not in rest else None


@dataclass(frozen=True, slots=True)
class Lease:
    """One lease item, as read (or as this worker last wrote it)."""

    shard_id: str
    owner: str | None = None
    counter: int = 0
    checkpoint: str = TRIM_HORIZON
    sub_sequence_number: int = 0
    owner_switches: int = 0
    parents: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()
    starting_hash_key: str | None = None
    ending_hash_key: str | None = None
    scope: str | None = None
    checkpoint_owner: str | None = None

    @property
    def finished(self) -> bool:
        """The shard is closed and every record of it is done (SHARD_END)."""
        return self.checkpoint == SHARD_END_MARK

    @property
    def started(self) -> bool:
        """Someone checkpointed in this shard (a sequence number or SHARD_END)."""
        return self.checkpoint == SHARD_END_MARK or self.checkpoint.isdigit()

    @classmethod
    def new(cls, shard: Shard, checkpoint: str, scope: str) -> Lease:
        """An unowned lease for ``shard``, as the KCL creates them."""
        return cls(
            shard_id=shard.shard_id,
            checkpoint=checkpoint,
            parents=frozenset(shard.parent_ids),
            starting_hash_key=str(shard.starting_hash_key),
            ending_hash_key=str(shard.ending_hash_key),
            scope=scope,
        )


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _int(item: Mapping[str, Any], name: str) -> int:
    value = item.get(name)
    try:
        return int(value["N"]) if value else 0
    except (KeyError, TypeError, ValueError):
        return 0


def _str(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, Mapping) else None


def _set(item: Mapping[str, Any], name: str) -> frozenset[str]:
    value = item.get(name)
    return frozenset(value.get("SS", ())) if isinstance(value, Mapping) else frozenset()


def is_lease_item(item: Mapping[str, Any]) -> bool:
    """The KCL's rule for telling a lease from the other items of a 3.x table.

    DynamoDBLeaseSerializer.fromDynamoRecord reads an item as a lease when its
    ``entityType`` is absent or ``LEASE``; the KCL's coordinator knows the migration items
    by key when they have none. Beyond that, an item without a string ``leaseKey``, a
    numeric ``leaseCounter`` and a string ``checkpoint`` is no lease of anyone's.
    """
    entity = item.get(ENTITY_TYPE)
    if entity is not None and _str(item, ENTITY_TYPE) != LEASE_ENTITY:
        return False
    key = _str(item, LEASE_KEY)
    if key is None or key in _COORDINATOR_KEYS:
        return False
    counter = item.get(LEASE_COUNTER)
    return (
        isinstance(counter, Mapping)
        and "N" in counter
        and _str(item, CHECKPOINT) is not None
    )


class LeaseTable:
    """The lease items of one (application, stream) in one DynamoDB table."""

    def __init__(
        self,
        client: Any,
        table: str,
        scheme: KeyScheme,
        scope: str,
        owner: str,
        *,
        holder_client: Any = None,
    ) -> None:
        self.client = client
        # Renewals and checkpoints go through their own connections, so scans and takes
        # never hold them up (a worker holding thousands of leases renews them all).
        self.holder_client = client if holder_client is None else holder_client
        self.table = table
        self.scheme = scheme
        self.scope = scope
        self.owner = owner

    # --- items ------------------------------------------------------------------------

    def parse(self, item: Mapping[str, Any]) -> Lease | None:
        """The lease in ``item``, or None when it is not a lease (:func:`is_lease_item`)
        or its key is not this scheme's."""
        if not is_lease_item(item):
            return None
        key = _str(item, LEASE_KEY)
        shard_id = None if key is None else self.scheme.shard_id(key)
        if shard_id is None:
            return None
        checkpoint = _str(item, CHECKPOINT) or TRIM_HORIZON
        return Lease(
            shard_id=shard_id,
            owner=_str(item, LEASE_OWNER) or None,
            counter=_int(item, LEASE_COUNTER),
            checkpoint=checkpoint,
            sub_sequence_number=_int(item, CHECKPOINT_SUB),
            owner_switches=_int(item, OWNER_SWITCHES),
            parents=_set(item, PARENTS),
            children=_set(item, CHILDREN),
            starting_hash_key=_str(item, STARTING_HASH_KEY),
            ending_hash_key=_str(item, ENDING_HASH_KEY),
            scope=_str(item, SCOPE),
            checkpoint_owner=_str(item, CHECKPOINT_OWNER),
        )

    def to_item(self, lease: Lease) -> dict[str, Any]:
        """The DynamoDB item of ``lease``, with the KCL's names and types."""
        item: dict[str, Any] = {
            LEASE_KEY: _s(self.scheme.key(lease.shard_id)),
            LEASE_COUNTER: _n(lease.counter),
            CHECKPOINT: _s(lease.checkpoint),
            CHECKPOINT_SUB: _n(lease.sub_sequence_number),
            OWNER_SWITCHES: _n(lease.owner_switches),
        }
        if lease.owner is not None:
            item[LEASE_OWNER] = _s(lease.owner)
        if lease.parents:
            item[PARENTS] = {"SS": sorted(lease.parents)}
        if lease.children:
            item[CHILDREN] = {"SS": sorted(lease.children)}
        if lease.starting_hash_key is not None and lease.ending_hash_key is not None:
            item[STARTING_HASH_KEY] = _s(lease.starting_hash_key)
            item[ENDING_HASH_KEY] = _s(lease.ending_hash_key)
        if lease.scope is not None:
            item[SCOPE] = _s(lease.scope)
        return item

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {LEASE_KEY: _s(self.scheme.key(shard_id))}

    async def _call(self, operation: str, *, holder: bool = False, **params: Any) -> Any:
        client = self.holder_client if holder else self.client
        return await _aws.call(client, operation, service="dynamodb", **params)

    # --- the table ----------------------------------------------------------------------

    async def ensure(self) -> None:
        """Create the table when missing (on-demand billing, ``leaseKey`` hash key) and
        wait until it is ACTIVE.

        Raises errors.LeaseTableConflict when an existing table's key schema is not the
        KCL's, errors.AccessDenied and other errors.AWSError subclasses; TimeoutError if
        the table is not ACTIVE within TABLE_ACTIVE_TIMEOUT seconds.
        """
        description = await self._describe()
        if description is None:
            log.info("creating lease table %s", self.table)
            try:
                await self._call(
                    "create_table",
                    TableName=self.table,
                    KeySchema=[{"AttributeName": LEASE_KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": LEASE_KEY, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except errors.ResourceInUse:
                pass  # another worker is creating it
            description = await self._describe()
        with anyio.fail_after(TABLE_ACTIVE_TIMEOUT):
            while description is None or description.get("TableStatus") not in _USABLE:
                await anyio.sleep(0.5)
                description = await self._describe()
        self._check_schema(description)

    async def _describe(self) -> dict[str, Any] | None:
        try:
            response = await self._call("describe_table", TableName=self.table)
        except errors.ResourceNotFound:
            return None
        description: dict[str, Any] = response["Table"]
        return description

    def _check_schema(self, description: Mapping[str, Any]) -> None:
        schema = [(k.get("AttributeName"), k.get("KeyType")) for k in description["KeySchema"]]
        definitions = description["AttributeDefinitions"]
        types = {a["AttributeName"]: a["AttributeType"] for a in definitions}
        if schema != [(LEASE_KEY, "HASH")] or types.get(LEASE_KEY) != "S":
            raise errors.LeaseTableConflict(
                f"table {self.table!r} is not a lease table: its key must be the string "
                f"hash key {LEASE_KEY!r}, got {schema}"
            )

    async def scan(
        self, segment: tuple[int, int] | None = None
    ) -> tuple[list[Lease], list[str]]:
        """Every lease of this scheme (consistent read) in the table or in one parallel-scan
        ``segment`` (index, total), and the keys of foreign items (other key schemes, or
        another application's or stream's leases). Items that are not leases are skipped."""
        params: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if segment is not None:
            params.update(Segment=segment[0], TotalSegments=segment[1])
        if self.scheme.shared:
            params.update(
                FilterExpression="begins_with(#k, :prefix)",
                ExpressionAttributeNames={"#k": LEASE_KEY},
                ExpressionAttributeValues={":prefix": _s(self.scheme.prefix)},
            )
        leases: list[Lease] = []
        foreign: list[str] = []
        while True:
            page = await self._call("scan", **params)
            for item in page.get("Items", ()):
                if not is_lease_item(item):
                    continue  # the KCL 3.x leader lock, migration state, worker metrics
                lease = self.parse(item)
                if lease is None:
                    if not self.scheme.shared:
                        foreign.append(_str(item, LEASE_KEY) or "?")
                elif lease.scope is not None and lease.scope != self.scope:
                    foreign.append(self.scheme.key(lease.shard_id))
                else:
                    leases.append(lease)
            last = page.get("LastEvaluatedKey")
            if not last:
                return leases, foreign
            params["ExclusiveStartKey"] = last

    # --- reads and conditional writes ---------------------------------------------------

    async def get(self, shard_id: str) -> Lease | None:
        """The lease of ``shard_id`` (consistent read), or None when there is none."""
        response = await self._call(
            "get_item", TableName=self.table, Key=self._key(shard_id), ConsistentRead=True
        )
        item = response.get("Item")
        return None if not item else self.parse(item)

    async def create(self, lease: Lease) -> bool:
        """Put a new lease unless one exists; False when someone else created it first."""
        try:
            await self._call(
                "put_item",
                TableName=self.table,
                Item=self.to_item(lease),
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": LEASE_KEY},
            )
        except errors.ConditionFailed:
            return False
        return True

    async def _update(
        self,
        shard_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        returns: bool = False,
        holder: bool = False,
    ) -> Any:
        used = set(_PLACEHOLDER.findall(f"{update} {condition}"))
        names = {k: v for k, v in _NAMES.items() if k in used}
        params: dict[str, Any] = {
            "holder": holder,
            "TableName": self.table,
            "Key": self._key(shard_id),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if returns:
            params["ReturnValues"] = "ALL_NEW"
        return await self._call("update_item", **params)

    async def take(self, lease: Lease) -> Lease:
        """Become the owner of ``lease`` as last seen (owner and counter unchanged since).

        Raises errors.ConditionFailed when the lease changed (someone renewed or took it).
        """
        values: dict[str, Any] = {
            ":me": _s(self.owner),
            ":c": _n(lease.counter),
            ":next": _n(lease.counter + 1),
        }
        update = "SET #o = :me, #c = :next"
        if lease.owner is None:
            condition = "#c = :c AND attribute_not_exists(#o)"
        else:
            condition = "#c = :c AND #o = :old"
            values[":old"] = _s(lease.owner)
        # DynamoDBLeaseSerializer.getDynamoTakeLeaseUpdate: a take ends a KCL 3.x hand-off
        # (checkpointOwner removed) and counts an owner switch when the owner changes.
        if (lease.owner is not None and lease.owner != self.owner) or (
            lease.checkpoint_owner is not None and lease.checkpoint_owner == self.owner
        ):
            update += " ADD #sw :one"
            values[":one"] = _n(1)
        update += " REMOVE #co"
        response = await self._update(lease.shard_id, update, condition, values, returns=True)
        taken = self.parse(response["Attributes"])
        if taken is None:  # pragma: no cover - the key is ours by construction
            raise errors.LeaseLost(lease.shard_id, "lease item changed its key")
        return taken

    async def renew(self, shard_id: str, counter: int) -> None:
        """Heartbeat: leaseCounter + 1 if this worker still owns the lease at ``counter``.

        Raises errors.ConditionFailed otherwise.
        """
        await self._update(
            shard_id,
            "SET #c = :next",
            "#o = :me AND #c = :c",
            {":me": _s(self.owner), ":c": _n(counter), ":next": _n(counter + 1)},
            holder=True,
        )

    async def checkpoint(
        self,
        shard_id: str,
        counter: int,
        sequence_number: str,
        sub_sequence_number: int,
        children: frozenset[str] = frozenset(),
    ) -> None:
        """Store a position if this worker owns the lease at ``counter`` (counter + 1,
        owner switches reset, a KCL pending checkpoint cleared).

        Raises errors.ConditionFailed otherwise.
        """
        update = "SET #cp = :seq, #sub = :sub, #sw = :zero, #c = :next"
        values: dict[str, Any] = {
            ":me": _s(self.owner),
            ":c": _n(counter),
            ":next": _n(counter + 1),
            ":seq": _s(sequence_number),
            ":sub": _n(sub_sequence_number),
            ":zero": _n(0),
        }
        if children:
            update += ", #ch = :children"
            values[":children"] = {"SS": sorted(children)}
        update += " REMOVE #p0, #p1, #p2"
        await self._update(shard_id, update, "#o = :me AND #c = :c", values, holder=True)

    async def set_children(self, shard_id: str, children: frozenset[str]) -> None:
        """Record a finished lease's children (any worker may: the lease is at SHARD_END
        and nothing else of it changes). Raises errors.ConditionFailed if not finished."""
        await self._update(
            shard_id,
            "SET #ch = :children",
            "#cp = :end",
            {":children": {"SS": sorted(children)}, ":end": _s(SHARD_END_MARK)},
        )

    async def release(self, shard_id: str, counter: int) -> None:
        """Give the lease up (leaseOwner removed, counter + 1) so others take it at once.

        Raises errors.ConditionFailed when this worker does not own it at ``counter``.
        """
        await self._update(
            shard_id,
            "REMOVE #o SET #c = :next",
            "#o = :me AND #c = :c",
            {":me": _s(self.owner), ":c": _n(counter), ":next": _n(counter + 1)},
        )
