"""Aggregates that landed off their predicted shard (the :class:`Sender` owns one
:class:`OffShardAggregates`).

An entry that lands on a shard other than the predicted one means the shard map is stale:
the sender counts it as misrouted and the tracker refreshes the map. A plain record is
delivered wherever it landed. An aggregate was written too, but a KCL consumer drops an
aggregate WHOLE when any of its records' effective hash keys falls outside the shard's
hash-key range (``AggregatorUtil.deaggregate`` in the KCL), and so does shardflow's
Consumer: its records are delivered only if the landed shard's range holds them all.
Otherwise the aggregate is *parked* here until the refreshed map comes
(:meth:`OffShardAggregates.map_refreshed`), and then every one of its records gets a
``WrongShard`` attempt and is sent again (re-packed with the new map). Nothing is
reported delivered that a KCL consumer would not see; a reader that keeps misplaced
aggregates (aws-kinesis-agg without a range check) may see those records twice.
Meanwhile the records predicted for that shard wait too (their lane is suspended), so
that no more aggregates go astray. A parked record whose deadline passes before the map
is refreshed fails (:meth:`OffShardAggregates.expire`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..models import Attempt
from ..shardmap import ShardMap, hash_key
from .accumulator import Accumulator
from .records import Aggregate, Landing, PendingRecord
from .shards import ShardTracker

if TYPE_CHECKING:
    from .sender import Sender

__all__ = ["WRONG_SHARD", "OffShardAggregates"]

log = logging.getLogger("shardflow.producer")

WRONG_SHARD = "WrongShard"
"""Error code of the attempt of an aggregate that landed where a KCL consumer drops it."""

_monotonic = time.monotonic  # the producer's clock for deadlines


class OffShardAggregates:
    """Aggregates that landed where a KCL consumer may drop them, parked until the next
    shard map tells which of their records to send again (through ``sender``)."""

    def __init__(
        self, sender: Sender, accumulator: Accumulator, tracker: ShardTracker | None
    ) -> None:
        self._sender = sender
        self._acc = accumulator
        self._tracker = tracker
        self.parked: list[tuple[Aggregate, Landing]] = []
        """(aggregate, where it landed), waiting for the next shard map."""

    @property
    def records(self) -> int:
        """Records of aggregates waiting for a shard map refresh to be judged."""
        return sum(len(agg.records) for agg, *_ in self.parked)

    def park(self, agg: Aggregate, landing: Landing) -> None:
        """Keep ``agg`` (written at ``landing``) until the refreshed shard map tells where
        to send its records again (sending them with the stale map would only land them
        on the wrong shard once more); no more aggregates go to its predicted shard."""
        self.parked.append((agg, landing))
        self._acc.suspend(agg.shard)

    def holds_all(self, agg: Aggregate, shard_id: str) -> bool:
        """Whether ``shard_id``'s hash-key range holds the effective hash key of every
        record of ``agg`` (its explicit hash key, else the MD5 of its partition key, as
        the KCL judges it); False while the range is unknown."""
        assert self._tracker is not None
        found = self._tracker.ranges.get(shard_id)
        if found is None:
            return False
        low, high = found
        seen: set[str] = set()
        for record in agg.unpack():  # (records packed at put() keep no key of their own)
            if record.ehk is not None:
                value = int(record.ehk)
            elif record.key in seen:
                continue
            else:
                seen.add(record.key)
                value = hash_key(record.key)
            if not low <= value <= high:
                return False
        return True

    def _wrong_shard(self, agg: Aggregate, landing: Landing) -> None:
        """``agg`` landed on a shard whose range does not hold all its records (or whose
        range is unknown): a KCL consumer drops it whole, so every record goes again."""
        sender = self._sender
        records = agg.unpack()
        log.info(
            "an aggregate of %d records predicted for %s landed on %s, whose hash-key range "
            "does not hold them all (a KCL consumer drops it whole): sending all again",
            len(records),
            agg.shard,
            landing.shard_id,
        )
        attempt = Attempt(
            WRONG_SHARD,
            f"the aggregate landed on {landing.shard_id}, whose hash-key range does not hold "
            "all its records (a KCL consumer drops it whole); sent again",
            landing.ok.started_at,
            landing.ok.duration,
        )
        for record in records:
            sender.record_attempt(record, attempt)
        late = sender.retry(records, _monotonic(), backoff=False)
        if late:
            sender.fail(late, "record_ttl ran out before a successful try", None)

    def map_refreshed(self, shard_map: ShardMap) -> None:
        """A new shard map: pack with it from now on, judge the parked aggregates."""
        sender = self._sender
        self._acc.set_map(shard_map)
        parked, self.parked = self.parked, []
        done: list[PendingRecord] = []
        for agg, landing in parked:
            if self.holds_all(agg, landing.shard_id):
                sender.deliver_aggregate(agg, landing, done)
            else:
                self._wrong_shard(agg, landing)
        if done:
            sender.delivered += len(done)
            sender.resolved(done)
        sender.notify()

    def expire(self, now: float) -> None:
        """Fail the parked records whose deadline passed before the map could be refreshed."""
        sender = self._sender
        keep: list[tuple[Aggregate, Landing]] = []
        late: list[PendingRecord] = []
        for item in self.parked:
            agg, landing = item
            if min(r.deadline for r in agg.records) > now:
                keep.append(item)
                continue
            attempt = Attempt(
                WRONG_SHARD,
                f"the aggregate landed on {landing.shard_id}, which may not hold all its "
                "records",
                landing.ok.started_at,
                landing.ok.duration,
            )
            for record in agg.records:
                sender.record_attempt(record, attempt)
            late.extend(agg.records)
        self.parked = keep
        if late:
            sender.fail(
                late,
                "record_ttl ran out: the aggregate landed on an unexpected shard, and the shard "
                "map could not be refreshed in time to send it again where a KCL consumer "
                "keeps it",
                None,
            )
