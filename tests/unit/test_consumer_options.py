"""Consumer options are validated at construction, with clear messages."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shardflow import Consumer, KinesisLimits, MemoryCheckpointer
from shardflow.consumer.consumer import start_position
from shardflow.consumer.shard_reader import backoff_delay

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/logs"


def test_defaults() -> None:
    consumer = Consumer("logs")
    assert consumer.stream == "logs"
    assert consumer.app_name == "shardflow"
    assert "logs" in repr(consumer)
    assert consumer.stats().records_delivered == 0
    assert Consumer(ARN).stream == ARN


@pytest.mark.parametrize(
    "start_at", ["EARLIEST", "", "trim horizon", "yesterday", "2024-13-01", None, 0, 1.5]
)
def test_bad_start_at(start_at: Any) -> None:
    with pytest.raises(ValueError, match="start_at must be 'TRIM_HORIZON'") as info:
        Consumer("logs", start_at=start_at)
    assert "ISO 8601" in str(info.value)


UTC = timezone.utc


@pytest.mark.parametrize(
    ("spelling", "position"),
    [
        ("TRIM_HORIZON", "TRIM_HORIZON"),
        ("trim_horizon", "TRIM_HORIZON"),
        ("Trim-Horizon", "TRIM_HORIZON"),
        ("trim", "TRIM_HORIZON"),
        ("oldest", "TRIM_HORIZON"),
        ("LATEST", "LATEST"),
        (" latest ", "LATEST"),
        ("now", "LATEST"),
        ("NEW", "LATEST"),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # UTC, as the CLI
        ("2024-05-01T21:00:00+09:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_start_at_takes_the_spellings_of_the_cli(spelling: str, position: object) -> None:
    from shardflow.cli._records import parse_start

    assert start_position(spelling) == position
    cli = parse_start(spelling)  # the CLI's --from reads each the same way
    assert (cli.astimezone(UTC) if isinstance(cli, datetime) else cli) == position
    Consumer("logs", start_at=spelling)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Consumer("logs", start_at=datetime(2024, 1, 1))


def test_aware_datetime_is_accepted() -> None:
    tz = timezone(timedelta(hours=9))
    Consumer("logs", start_at=datetime(2024, 1, 1, 9, tzinfo=tz))


@pytest.mark.parametrize("poll", [0.0, 0.1, 0.19, -1.0, float("nan"), float("inf")])
def test_poll_interval_minimum(poll: float) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        Consumer("logs", poll_interval=poll)


def test_poll_interval_type() -> None:
    with pytest.raises(TypeError, match="poll_interval"):
        Consumer("logs", poll_interval="1")  # type: ignore[arg-type]
    Consumer("logs", poll_interval=0.2)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("max_buffer_records", 0, ValueError),
        ("max_buffer_records", 1.5, TypeError),
        ("get_records_limit", 0, ValueError),
        ("get_records_limit", 10_001, ValueError),
        ("resync_interval", 0, ValueError),
        ("close_timeout", -1, ValueError),
        ("limits", {"max_get_records": 5}, TypeError),
        ("credentials", "secret", TypeError),
    ],
)
def test_bad_options(option: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=option.split("_")[0]):
        Consumer("logs", **{option: value})


def test_get_records_limit_follows_limits() -> None:
    with pytest.raises(ValueError, match="<= 100"):
        Consumer("logs", get_records_limit=500, limits=KinesisLimits(max_get_records=100))


def test_stream_must_be_a_name_or_arn() -> None:
    with pytest.raises(ValueError, match="stream"):
        Consumer("")
    with pytest.raises(ValueError, match="ARN"):
        Consumer("arn:aws:s3:::bucket")


def test_app_name_rules() -> None:
    with pytest.raises(ValueError, match="app_name is required"):
        Consumer("logs", checkpointer=MemoryCheckpointer())
    with pytest.raises(ValueError, match="app_name"):
        Consumer("logs", app_name="")
    with pytest.raises(TypeError, match="checkpointer"):
        Consumer("logs", app_name="a", checkpointer=object())  # type: ignore[arg-type]


def test_backoff_is_full_jitter_and_capped() -> None:
    delays = [backoff_delay(attempt) for attempt in range(40) for _ in range(20)]
    assert all(0.0 <= d <= 10.0 for d in delays)
    assert max(backoff_delay(1) for _ in range(200)) <= 0.4
    assert max(delays) > 1.0
