"""The KCL's side of a lease table, as its sources (v3.5.1) state it: items written
exactly as the KCL writes them, and the KCL's rules for reading them.

Every function cites the class it stands in for (awslabs/amazon-kinesis-client,
amazon-kinesis-client/src/main/java/software/amazon/kinesis/...). Items are DynamoDB
typed attribute maps, ready for boto3's ``put_item``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

Item = dict[str, Any]

MAX_HASH_KEY = 2**128 - 1


def lease_item(
    shard_id: str,
    checkpoint: str,
    *,
    owner: str | None = None,
    counter: int = 1,
    sub_sequence_number: int = 0,
    parents: tuple[str, ...] = (),
    hash_range: tuple[int, int] = (0, MAX_HASH_KEY),
    version: int = 3,
    checkpoint_owner: str | None = None,
) -> Item:
    """A lease as leases/dynamodb/DynamoDBLeaseSerializer.toDynamoRecord writes it:
    leaseKey, leaseCounter, leaseOwner (when owned), ownerSwitchesSinceCheckpoint,
    checkpoint (a sequence number or a sentinel of ExtendedSequenceNumber:
    TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END), checkpointSubSequenceNumber,
    parentShardId (SS, when any), startingHashKey / endingHashKey (decimal strings),
    checkpointOwner (3.x hand-off, when set) and, from 3.x on, entityType "LEASE"
    (EntityType.LEASE). A KCL 2.x lease (``version=2``) has no entityType."""
    item: Item = {
        "leaseKey": {"S": shard_id},
        "leaseCounter": {"N": str(counter)},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "checkpoint": {"S": checkpoint},
        "checkpointSubSequenceNumber": {"N": str(sub_sequence_number)},
        "startingHashKey": {"S": str(hash_range[0])},
        "endingHashKey": {"S": str(hash_range[1])},
    }
    if owner is not None:
        item["leaseOwner"] = {"S": owner}
    if parents:
        item["parentShardId"] = {"SS": list(parents)}
    if checkpoint_owner is not None:
        item["checkpointOwner"] = {"S": checkpoint_owner}
    if version >= 3:
        item["entityType"] = {"S": "LEASE"}
    return item


def leader_lock_item(owner: str) -> Item:
    """The leader lock of leader/DynamoDBLockBasedLeaderDecider in the lease table (3.5's
    single-table layout: coordinator/delegate/LeaseTableCoordinatorStateDAODelegate uses
    ``leaseKey`` as the lock client's partition key): key LeaderLock.LEADER_HASH_KEY
    ("Leader"), entityType "LEADER" (LeaderLock's CoordinatorStateType, passed as the
    lock's additional attributes), and what AmazonDynamoDBLockClient stores for a held
    lock: ownerName, leaseDuration and recordVersionNumber (strings)."""
    return {
        "leaseKey": {"S": "Leader"},
        "entityType": {"S": "LEADER"},
        "ownerName": {"S": owner},
        "leaseDuration": {"S": "30000"},
        "recordVersionNumber": {"S": str(uuid.uuid4())},
    }


def migration_item(modified_by: str) -> Item:
    """coordinator/migration/MigrationState.serialize: key MIGRATION_HASH_KEY
    ("Migration3.0"), entityType "CLIENT_VERSION_MIGRATION", cv (the ClientVersion),
    mb (modified by), mts (epoch milliseconds), h (history: a list of maps)."""
    now = str(int(time.time() * 1000))
    return {
        "leaseKey": {"S": "Migration3.0"},
        "entityType": {"S": "CLIENT_VERSION_MIGRATION"},
        "cv": {"S": "CLIENT_VERSION_3X"},
        "mb": {"S": modified_by},
        "mts": {"N": now},
        "h": {"L": [{"M": {"cv": {"S": "CLIENT_VERSION_INIT"}, "mb": {"S": modified_by},
                           "mts": {"N": now}}}]},
    }


def worker_metrics_item(worker_id: str) -> Item:
    """worker/metricstats/WorkerMetricStats.LeaseTableWorkerMetricStats: one item per
    worker in the lease table, keyed by the worker id itself (``leaseKey`` = workerId),
    entityType "WORKER_METRIC_STATS", lut (last update, epoch seconds), sts (metric ->
    last values), opr (metric -> operating range)."""
    return {
        "leaseKey": {"S": worker_id},
        "entityType": {"S": "WORKER_METRIC_STATS"},
        "lut": {"N": str(int(time.time()))},
        "sts": {"M": {"CPU": {"L": [{"N": "12.5"}, {"N": "14.0"}]}}},
        "opr": {"M": {"CPU": {"L": [{"N": "100"}]}}},
    }


def non_lease_items(workers: list[str]) -> list[Item]:
    """What a KCL 3.5 application keeps in its lease table besides leases."""
    return [leader_lock_item(workers[0]), migration_item(workers[0])] + [
        worker_metrics_item(w) for w in workers
    ]


def is_lease(item: Item) -> bool:
    """DynamoDBLeaseSerializer.fromDynamoRecord: an item is a lease when its entityType
    is absent (leases written before 3.x) or "LEASE"; anything else returns null."""
    entity = item.get("entityType")
    return entity is None or entity.get("S") == "LEASE"


def iterator_type(checkpoint: str) -> str:
    """retrieval/IteratorBuilder: the GetShardIterator type a lease's checkpoint starts
    from (SHARD_ITERATOR_MAPPING for the sentinels; AFTER_SEQUENCE_NUMBER otherwise).
    For AT_TIMESTAMP the timestamp is the worker's own InitialPositionInStreamExtended:
    the lease holds none."""
    return checkpoint if checkpoint in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP") else (
        "AFTER_SEQUENCE_NUMBER"
    )
