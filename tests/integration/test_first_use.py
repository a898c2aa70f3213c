"""What a new user meets: a region in the environment, a missing region, profile or
credentials, and creating and deleting a stream (issue 17, items 1, 2 and 4).

The environment is changed with ``monkeypatch.setenv`` (botocore reads it as it would in a
user's shell); nothing in botocore or aiobotocore is patched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio
import boto3
import pytest
from botocore.exceptions import ClientError

from shardflow import (
    Consumer,
    Producer,
    create_stream,
    delete_stream,
    errors,
)
from shardflow._core.aws import call, map_exception, open_client

from support import unique_name


def _client(url: str, region: str) -> Any:
    return boto3.client("kinesis", endpoint_url=url, region_name=region)


# --- create_stream / delete_stream ---------------------------------------------------------


async def test_create_and_delete_a_stream(moto_url: str) -> None:
    name = unique_name("admin")
    await create_stream(name, shard_count=3, endpoint_url=moto_url)
    summary = _client(moto_url, "us-east-1").describe_stream_summary(StreamName=name)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3

    with pytest.raises(errors.ResourceInUse):
        await create_stream(name, endpoint_url=moto_url)
    await create_stream(name, exist_ok=True, endpoint_url=moto_url)

    await delete_stream(name, endpoint_url=moto_url)
    with pytest.raises(_client(moto_url, "us-east-1").exceptions.ResourceNotFoundException):
        _client(moto_url, "us-east-1").describe_stream_summary(StreamName=name)
    with pytest.raises(errors.StreamNotFound, match=name):
        await delete_stream(name, endpoint_url=moto_url)
    await delete_stream(name, missing_ok=True, endpoint_url=moto_url)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"shard_count": 0}, ValueError, "shard_count must be between 1 and 100,000"),
        ({"shard_count": 2.0}, TypeError, "shard_count must be an int"),
        ({"max_wait": 0}, ValueError, "max_wait must be > 0 seconds, got 0.0"),
        ({"endpoint_url": "localhost:4567"}, ValueError, "endpoint_url must be an http"),
        ({"region_name": "EU WEST"}, ValueError, "region_name must be a region"),
    ],
)
async def test_create_stream_refuses_bad_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await create_stream("s", **options)


async def test_create_stream_takes_a_name_not_an_arn() -> None:
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/logs"
    with pytest.raises(ValueError, match="takes a stream name, not an ARN"):
        await create_stream(arn)


# --- one region, whatever the environment says ----------------------------------------------


async def test_a_region_in_the_environment_is_used_everywhere(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    name = unique_name("region")
    await create_stream(name, endpoint_url=moto_url)
    async with Producer(name, endpoint_url=moto_url) as producer:
        await producer.put_and_wait(b"hello", partition_key="k")
    async with Consumer(name, endpoint_url=moto_url, start_at="TRIM_HORIZON") as consumer:
        with anyio.fail_after(20):
            record = await consumer.__anext__()
    assert record.data == b"hello"
    # The stream is in eu-west-1 only, where the environment said.
    assert _client(moto_url, "eu-west-1").describe_stream_summary(StreamName=name)
    with pytest.raises(ClientError):
        _client(moto_url, "us-east-1").describe_stream_summary(StreamName=name)


@pytest.mark.parametrize("cls", [Producer, Consumer])
async def test_stream_not_found_names_stream_region_and_endpoint(
    moto_url: str, cls: type[Producer] | type[Consumer]
) -> None:
    name = unique_name("elsewhere")
    await create_stream(name, endpoint_url=moto_url, region_name="eu-west-1")

    async def use() -> None:
        async with cls(name, endpoint_url=moto_url, region_name="us-east-2") as client:
            if isinstance(client, Producer):  # it may start without the stream
                await client.put_and_wait(b"x", partition_key="k")
            else:
                await client.__anext__()

    with anyio.fail_after(30), pytest.raises(errors.ShardflowError) as caught:
        await use()
    error = caught.value
    if isinstance(error, errors.DeliveryFailed):
        assert isinstance(error.cause, errors.StreamNotFound)
        error = error.cause
    assert isinstance(error, errors.StreamNotFound)
    assert f"stream {name!r} not found in region us-east-2 at {moto_url}" in str(error)


def _shardflow(*args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run(
        [sys.executable, "-m", "shardflow", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def test_cli_put_create_then_tail_agree_on_the_environment_region(moto_url: str) -> None:
    name = unique_name("cli-region")
    put = subprocess.run(
        [sys.executable, "-m", "shardflow", "put", name, "--create", "1", "--key", "k",
         "--endpoint-url", moto_url],
        input='{"n": 1}\n',
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"},
        check=False,
    )
    assert put.returncode == 0, put.stderr
    tail = _shardflow("tail", name, "--from", "trim", "--limit", "1", "--endpoint-url",
                      moto_url, AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == '{"n": 1}\n'
    elsewhere = _shardflow("tail", name, "--region", "us-east-2", "--endpoint-url", moto_url)
    assert elsewhere.returncode == 1
    assert (f"shardflow tail: stream {name!r} not found in region us-east-2 at {moto_url}"
            in elsewhere.stderr)


# --- the environment is not a bug ----------------------------------------------------------


async def test_no_region_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(errors.NoRegion) as caught:
        async with Producer("s"):
            pass
    message = str(caught.value)
    assert "region_name=" in message
    assert "AWS_REGION" in message
    assert "unexpected" not in message
    assert isinstance(caught.value.__cause__, Exception)  # botocore's, chained


async def test_unknown_profile_is_named(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(errors.ProfileNotFound, match="'no-such-profile'"):
        await delete_stream("s", missing_ok=True)
    with pytest.raises(errors.ProfileNotFound, match="'no-such-profile'"):  # a local endpoint
        await delete_stream("s", missing_ok=True, endpoint_url=moto_url)


async def test_no_credentials_is_not_access_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(errors.NoCredentials) as caught:
        await delete_stream("s", region_name="eu-west-1")
    assert not isinstance(caught.value, errors.AccessDenied)
    assert "AWS was not asked" in str(caught.value)


def test_cli_environment_problems_are_one_line_not_a_bug(moto_url: str) -> None:
    no_region = _shardflow("tail", "s", AWS_REGION=None, AWS_DEFAULT_REGION=None)
    assert no_region.returncode == 1
    assert no_region.stderr == (
        "shardflow tail: no AWS region configured: pass --region NAME or set AWS_REGION\n"
    )
    profile = _shardflow("tail", "s", AWS_PROFILE="no-such-profile")
    assert profile.returncode == 1
    assert profile.stderr.count("\n") == 1
    assert "'no-such-profile'" in profile.stderr
    assert "bug" not in profile.stderr


# --- the error map: what it does not know passes unchanged ----------------------------------


class _StandIn:
    """A client whose call fails the way a bug inside botocore or shardflow would."""

    async def describe_stream_summary(self, **params: Any) -> Any:
        raise ZeroDivisionError("a bug")

    async def list_shards(self, **params: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}}, "ListShards"
        )


async def test_the_error_map_reraises_what_it_does_not_know() -> None:
    with pytest.raises(ZeroDivisionError, match="a bug"):
        await call(_StandIn(), "describe_stream_summary", StreamName="s")
    with pytest.raises(errors.StreamNotFound) as caught:
        await call(_StandIn(), "list_shards", StreamName="s")
    assert isinstance(caught.value.__cause__, ClientError)
    assert map_exception(KeyError("x")) is None
    assert map_exception(RuntimeError("x")) is None


@pytest.mark.parametrize(
    ("service", "operation", "params", "named"),
    [
        ("s3", "head_bucket", {"Bucket": "no-such-bucket"}, "bucket 'no-such-bucket'"),
        ("dynamodb", "describe_table", {"TableName": "no-such-table"}, "table 'no-such-table'"),
    ],
)
async def test_other_not_found_errors_name_resource_region_and_endpoint(
    moto_url: str, service: str, operation: str, params: dict[str, str], named: str
) -> None:
    async with AsyncExitStack() as stack:
        client = await open_client(stack, service, endpoint_url=moto_url, region_name="eu-west-2")
        with pytest.raises(errors.ResourceNotFound) as caught:
            await call(client, operation, service, **params)
    assert f"{named} not found in region eu-west-2 at {moto_url}" in str(caught.value)
