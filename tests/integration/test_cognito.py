"""CognitoCredentials end to end: moto's cognito-identity, then a Producer signing with them.

A small recording proxy sits in front of moto so the test can see which access key signed
each Kinesis request and how often Cognito was asked.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from shardflow import BufferedOutput, CognitoCredentials, Collector, KinesisOutput, Producer, errors

from support import create_stream, read_stream, unique_name

COGNITO = "AWSCognitoIdentityService."


class RecordingProxy:
    """Forwards every request to ``upstream``; records target and signing key."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[tuple[str, str | None]] = []
        self.cognito_keys: list[str] = []
        self.url = ""

    def count(self, target: str) -> int:
        return sum(1 for t, _ in self.calls if t == target)

    def kinesis_keys(self) -> set[str | None]:
        return {key for target, key in self.calls if target.startswith("Kinesis_")}

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        auth = request.headers.get("Authorization", "")
        key = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else None
        self.calls.append((target, key))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            data = await upstream.read()
            if target == COGNITO + "GetCredentialsForIdentity" and upstream.status == 200:
                self.cognito_keys.append(orjson.loads(data)["Credentials"]["AccessKeyId"])
            return web.Response(
                body=data,
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "")},
            )

    async def __aenter__(self) -> RecordingProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()


@pytest_asyncio.fixture(loop_scope="function")
async def proxy(moto_url: str) -> AsyncIterator[RecordingProxy]:
    """Function-scoped loop: the proxy must serve on the test's own event loop."""
    async with RecordingProxy(moto_url) as recording:
        yield recording


def create_identity_pool(url: str) -> str:
    client = boto3.client("cognito-identity", endpoint_url=url, region_name="us-east-1")
    pool = client.create_identity_pool(
        IdentityPoolName=unique_name("pool").replace("-", "_"),
        AllowUnauthenticatedIdentities=True,
    )
    return str(pool["IdentityPoolId"])


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


async def test_a_producer_signs_with_cognito_credentials_and_refreshes_them(
    moto_url: str, proxy: RecordingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shardflow")
    pool_id = create_identity_pool(moto_url)
    stream = create_stream(moto_url)
    clock = Clock()
    creds = CognitoCredentials(pool_id, "us-east-1", endpoint_url=proxy.url, clock=clock)
    assert repr(creds) == f"CognitoCredentials(identity_pool_id={pool_id!r})"

    async with Producer(stream, endpoint_url=proxy.url, credentials=creds, linger=0.01) as p:
        for i in range(5):
            await p.put_and_wait({"n": i}, partition_key=f"k{i}")
        assert proxy.count(COGNITO + "GetId") == 1
        assert proxy.count(COGNITO + "GetCredentialsForIdentity") == 1
        assert creds.identity_id is not None
        # Move past the refresh point (moto's credentials live 90 s): the next request
        # refreshes them first, for the same identity.
        clock.offset = timedelta(seconds=80)
        for i in range(5, 10):
            await p.put_and_wait({"n": i}, partition_key=f"k{i}")
        assert proxy.count(COGNITO + "GetCredentialsForIdentity") == 2
        assert proxy.count(COGNITO + "GetId") == 1

    signing_keys = proxy.kinesis_keys()
    assert signing_keys == set(proxy.cognito_keys)
    assert "testing" not in signing_keys  # not the environment's credentials
    data = sorted(orjson.loads(r["Data"])["n"] for r in read_stream(moto_url, stream))
    assert data == list(range(10))
    secret = "ABCSECRETKEY"  # what moto hands out; it must appear nowhere
    token = "ABC12345"
    for text in (caplog.text, repr(creds), str(creds)):
        assert secret not in text
        assert token not in text


async def test_fetch_returns_the_expiry_and_keeps_the_identity(
    moto_url: str, proxy: RecordingProxy
) -> None:
    pool_id = create_identity_pool(moto_url)
    creds = CognitoCredentials(pool_id, "us-east-1", endpoint_url=proxy.url)
    first = await creds.fetch()
    identity = creds.identity_id
    second = await creds.fetch()
    assert first.tzinfo is not None
    assert datetime.now(timezone.utc) < first <= second
    assert creds.identity_id == identity
    assert proxy.count(COGNITO + "GetId") == 1
    assert proxy.count(COGNITO + "GetCredentialsForIdentity") == 2


async def test_a_collector_posts_through_a_cognito_producer(
    moto_url: str, proxy: RecordingProxy
) -> None:
    """What an app does: the output starts its own producer with Cognito credentials."""
    pool_id = create_identity_pool(moto_url)
    stream = create_stream(moto_url)
    creds = CognitoCredentials(pool_id, "us-east-1", endpoint_url=proxy.url)
    collector = Collector()
    collector.output(
        "app.**",
        BufferedOutput(
            KinesisOutput(
                lambda: Producer(stream, endpoint_url=proxy.url, credentials=creds, linger=0.01),
                partition_key="user_id",
            ),
            flush_interval=0.05,
        ),
    )
    async with collector:
        ids = {await collector.post("app.open", {"user_id": f"u{i}"}) for i in range(20)}
    got = {orjson.loads(r["Data"])["event_id"] for r in read_stream(moto_url, stream)}
    assert got == ids
    assert proxy.kinesis_keys() == set(proxy.cognito_keys)


async def test_an_unreachable_cognito_endpoint_is_a_clear_error() -> None:
    creds = CognitoCredentials(
        "us-east-1:00000000-0000-0000-0000-000000000000",
        "us-east-1",
        endpoint_url="http://127.0.0.1:9",
    )
    with pytest.raises(errors.EndpointUnreachable):
        await creds.fetch()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("no-colon", "us-east-1"), {}, ValueError, "region:uuid"),
        (("us-east-1:x", ""), {}, ValueError, "region_name"),
        (("us-east-1:x", "us-east-1"), {"logins": 3}, TypeError, "logins"),
        (("us-east-1:x", "us-east-1"), {"refresh_margin": 0}, ValueError, "refresh_margin"),
    ],
)
def test_arguments_are_validated(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CognitoCredentials(*args, **kwargs)


def test_repr_never_shows_logins() -> None:
    creds = CognitoCredentials(
        "us-east-1:abc", "us-east-1", logins={"accounts.google.com": "secret-id-token"}
    )
    assert "secret-id-token" not in repr(creds)
    assert "secret-id-token" not in str(creds)
