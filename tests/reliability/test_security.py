"""Security checks.

1. Secrets stay secret: with unique secret key and session token values (from the
   environment, and from CognitoCredentials), the producer, consumer (with
   DynamoDBLeases), S3Sink, collector and Cognito paths run with every logger at DEBUG,
   in success and in failure (AccessDenied, expired token, connection refused); the
   secret key and the session token appear in no repr, no exception (nor its chain) and
   no log record, except botocore's own wire dumps at DEBUG (botocore.endpoint,
   botocore.auth and botocore.parsers print request headers and response bodies, which
   the application chose to enable: counted, not asserted). ``shardflow --debug`` keeps
   botocore at INFO: its output is checked too.
2. Local servers and the fault proxy listen on 127.0.0.1 only (the kernel's socket table
   is read, and a connection through another local address is refused).
3. Spool, checkpoint and FileOutput files are created with mode 0600 under umask 000.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web

from shardflow import (
    BufferedOutput,
    CognitoCredentials,
    Collector,
    Consumer,
    DynamoDBLeases,
    FileOutput,
    KinesisOutput,
    Producer,
    S3Sink,
    SQLiteCheckpointer,
    errors,
    local_endpoint,
)
from shardflow.testing import FaultProxy

from support import ROOT, create_stream, free_port, unique_name
from support_consumer import POLL, collect, put_records
from support_reliability import report
from support_sinks import make_record, new_bucket

pytestmark = pytest.mark.slow


# --- 1. secrets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    access_key: str = field(default_factory=lambda: "ASIA" + uuid.uuid4().hex[:16].upper())
    secret_key: str = field(default_factory=lambda: "sEcReT" + uuid.uuid4().hex * 2)
    token: str = field(default_factory=lambda: "ToKeN" + uuid.uuid4().hex * 4)


class Gate:
    """An endpoint in front of kinesalite (Kinesis) and moto (DynamoDB, S3) that answers
    Cognito itself with the test's credentials, records which session tokens signed the
    requests, and refuses what ``deny`` names (a service prefix or operation; "*": all)
    with ``code``."""

    def __init__(self, kinesis_url: str, moto_url: str, secrets: Secrets) -> None:
        self.kinesis_url = kinesis_url
        self.moto_url = moto_url
        self.secrets = secrets
        self.deny: set[str] = set()
        self.code = "AccessDeniedException"
        self.tokens: dict[str, set[str]] = {}
        self.url = ""

    def denied(self, service: str, op: str) -> bool:
        return bool({"*", service, op} & self.deny)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        service, _, op = target.partition(".") if target else ("S3", "", request.method)
        service = service.split("_")[0]
        self.tokens.setdefault(service, set()).add(
            request.headers.get("X-Amz-Security-Token", ""))
        if service == "AWSCognitoIdentityService":
            return self._cognito(op)
        if self.denied(service, op):
            if service == "S3":
                xml = f"<Error><Code>AccessDenied</Code><Message>{self.code}</Message></Error>"
                return web.Response(status=403, text=xml, content_type="application/xml")
            return self._error(self.code, "User is not authorized to perform: " + op)
        upstream = self.kinesis_url if service == "Kinesis" else self.moto_url
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            data = await answer.read()
            return web.Response(body=data, status=answer.status, headers={
                k: v for k, v in answer.headers.items()
                if k.lower() in ("content-type", "x-amzn-errortype", "etag")})

    def _error(self, code: str, message: str) -> web.Response:
        body = orjson.dumps({"__type": code, "message": message})
        return web.Response(status=400, body=body, content_type="application/x-amz-json-1.1")

    def _cognito(self, op: str) -> web.Response:
        if self.denied("Cognito", op):
            return self._error("NotAuthorizedException", "Unauthenticated access is not allowed")
        if op == "GetId":
            doc: dict[str, Any] = {"IdentityId": "us-east-1:0f0f0f0f-0000-0000-0000-000000000000"}
        else:
            doc = {"IdentityId": "us-east-1:0f0f0f0f-0000-0000-0000-000000000000",
                   "Credentials": {"AccessKeyId": self.secrets.access_key,
                                   "SecretKey": self.secrets.secret_key,
                                   "SessionToken": self.secrets.token,
                                   "Expiration": time.time() + 3600}}
        return web.Response(body=orjson.dumps(doc), content_type="application/x-amz-json-1.1")

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[Gate]:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


class Capture:
    """Everything a user could see: every log record (all loggers, DEBUG, with
    tracebacks), reprs and strs of objects, exceptions with their whole chain."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []  # (logger, formatted text)
        self.seen: list[str] = []
        self.exceptions = 0

    @contextmanager
    def logs(self) -> Iterator[None]:
        capture = self
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                capture.records.append((record.name, formatter.format(record)))

        root = logging.getLogger()
        handler, level = Handler(logging.DEBUG), root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(level)

    def see(self, *objects: object) -> None:
        for obj in objects:
            self.seen += [repr(obj), str(obj)]

    @asynccontextmanager
    async def expect(self, kind: type[BaseException]) -> AsyncIterator[None]:
        """The block must raise ``kind``; its text and chain are captured."""
        try:
            yield
        except kind as exc:
            self.exceptions += 1
            self.seen.append("".join(traceback.format_exception(exc)))
            chained: BaseException | None = exc
            while chained is not None:
                self.see(chained, getattr(chained, "args", ()))
                if isinstance(chained, errors.DeliveryFailed) and chained.cause is not None:
                    self.see(chained.cause, chained.attempts)
                chained = chained.__cause__ or chained.__context__
        else:
            raise AssertionError(f"expected {kind.__name__}")

    def leaks(self, value: str) -> tuple[list[str], list[str]]:
        """(loggers whose records hold ``value``, other texts holding it)."""
        return ([name for name, text in self.records if value in text],
                [text[:200] for text in self.seen if value in text])


async def exercise(gate: Gate, capture: Capture, credentials: CognitoCredentials | None,
                   moto_url: str, kinesis_url: str) -> None:
    """Success and failure paths of every component, through ``gate``."""
    creds: dict[str, Any] = {"credentials": credentials} if credentials else {}
    url = gate.url
    stream = create_stream(kinesis_url, shards=1)
    bucket = new_bucket(moto_url)
    put_records(kinesis_url, stream, [("k", b"one"), ("k", b"two")])

    async with Producer(stream, endpoint_url=url, linger=0.01, **creds) as producer:
        result = await producer.put_and_wait({"n": 1}, partition_key="k")
        capture.see(producer, result, producer.stats())
    leases = DynamoDBLeases(unique_name("leases"), endpoint_url=url, failover_time=1.0, **creds)
    async with Consumer(stream, endpoint_url=url, app_name="app", checkpointer=leases,
                        poll_interval=POLL, **creds) as consumer:
        got = await collect(consumer, 3)
        await consumer.checkpoint(got[-1])
        capture.see(consumer, leases, got[-1], consumer.stats())
    async with S3Sink(bucket, endpoint_url=url, max_interval=0.5, **creds) as sink:
        await sink.write([make_record(1)])
        capture.see(sink)
    collector = Collector()
    output = KinesisOutput(lambda: Producer(stream, endpoint_url=url, linger=0.01, **creds))
    buffered = BufferedOutput(output, flush_interval=0.05)
    collector.output("app.**", buffered)
    async with collector:
        await collector.post("app.event", {"user": "u1"})
    capture.see(collector, output, buffered, credentials)

    # Refused: every component, then each service alone, then an expired token.
    gate.deny = {"*"}
    # (a producer starts without reaching the endpoint: its start's answer fails the
    # waiting record, then put() raises it)
    async with Producer(stream, endpoint_url=url, **creds) as refused:
        async with capture.expect(errors.DeliveryFailed):
            await refused.put_and_wait(b"refused", partition_key="k")
        async with capture.expect(errors.AccessDenied):
            await refused.put(b"refused", partition_key="k")
    async with capture.expect(errors.AccessDenied):
        await Consumer(stream, endpoint_url=url, **creds).__aenter__()
    # S3Sink goes on without HeadBucket (a role may only PutObject); the refused upload
    # is raised by close.
    sink = S3Sink(bucket, endpoint_url=url, close_timeout=0.5, **creds)
    async with capture.expect(errors.AccessDenied), sink:
        await sink.write([make_record(2)])
    capture.see(sink)
    gate.deny = {"DynamoDB"}
    denied = Consumer(stream, endpoint_url=url, app_name="app", poll_interval=POLL,
                      checkpointer=DynamoDBLeases("denied", endpoint_url=url, **creds), **creds)
    async with capture.expect(errors.AccessDenied), denied:
        pass
    gate.deny = {"PutRecords"}
    async with Producer(stream, endpoint_url=url, linger=0.01, **creds) as producer:
        future = await producer.put(b"refused", partition_key="k")
        async with capture.expect(errors.DeliveryFailed):
            await future
    gate.deny, gate.code = {"*"}, "ExpiredTokenException"
    async with Producer(stream, endpoint_url=url, record_ttl=0.5, **creds) as expired, \
            capture.expect(errors.DeliveryFailed):  # retried until its ttl
        await expired.put_and_wait(b"expired", partition_key="k")
    gate.code = "AccessDeniedException"
    # A collector whose producer cannot send keeps the event and logs why.
    collector = Collector()
    buffered = BufferedOutput(
        KinesisOutput(lambda: Producer(stream, endpoint_url=url, **creds)),
        flush_interval=0.05, backoff_base=0.05, close_timeout=0.5)
    collector.output("app.**", buffered)
    async with collector:
        await collector.post("app.event", {"user": "u2"})
        with anyio.fail_after(10):
            while sum("cannot send" in t for _, t in capture.records) < 1:  # noqa: ASYNC110
                await anyio.sleep(0.02)  # polling the captured log: no event to wait on
    gate.deny = set()
    # Unreachable endpoints.
    closed = f"http://127.0.0.1:{free_port()}"
    async with Producer(stream, endpoint_url=closed, record_ttl=0.5, **creds) as unreachable, \
            capture.expect(errors.DeliveryFailed):  # EndpointUnreachable until its ttl
        await unreachable.put_and_wait(b"unreachable", partition_key="k")
    async with capture.expect(errors.EndpointUnreachable):
        await Consumer(stream, endpoint_url=closed, **creds).__aenter__()
    # Resets on every PutRecords: retried until the record's TTL, then DeliveryFailed.
    async with FaultProxy(url, reset_before_fraction=1.0, operations={"PutRecords"}) as proxy, \
            Producer(stream, endpoint_url=proxy.url, record_ttl=0.5, **creds) as p:
        future = await p.put(b"reset", partition_key="k")
        async with capture.expect(errors.DeliveryFailed):
            await future


@pytest.mark.parametrize("source", ["environment", "cognito"])
async def test_secret_key_and_session_token_never_shown(
    source: str, kinesalite_url: str, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = Secrets()
    capture = Capture()
    gate = Gate(kinesalite_url, moto_url, secrets)
    async with gate.serve():
        with capture.logs():
            credentials = None
            if source == "environment":
                monkeypatch.setenv("AWS_ACCESS_KEY_ID", secrets.access_key)
                monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets.secret_key)
                monkeypatch.setenv("AWS_SESSION_TOKEN", secrets.token)
            else:
                credentials = CognitoCredentials(
                    "us-east-1:0f0f0f0f-1111-2222-3333-444444444444", "us-east-1",
                    logins={"accounts.example.com": secrets.token + "-idp"},
                    endpoint_url=gate.url)
                await credentials.fetch()
            await exercise(gate, capture, credentials, moto_url, kinesalite_url)
            if credentials is not None:
                gate.deny = {"Cognito"}
                refused = CognitoCredentials(credentials.identity_pool_id, "us-east-1",
                                             endpoint_url=gate.url)
                async with capture.expect(errors.AccessDenied):
                    await refused.fetch()
                gate.deny = set()
                unreachable = CognitoCredentials(credentials.identity_pool_id, "us-east-1",
                                                 endpoint_url=f"http://127.0.0.1:{free_port()}")
                async with capture.expect(errors.EndpointUnreachable):
                    await unreachable.fetch()
                capture.see(credentials, refused, unreachable)

    found = {}
    for what, value in (("secret_key", secrets.secret_key), ("token", secrets.token)):
        in_logs, elsewhere = capture.leaks(value)
        outside = [n for n in in_logs if not n.startswith("botocore.")]
        found[what] = (outside, elsewhere, len(in_logs) - len(outside))
    report(
        f"secrets ({source} credentials)", log_records=len(capture.records),
        reprs_and_exceptions=len(capture.seen), exceptions=capture.exceptions,
        **{f"{what}_shown": len(outside) + len(elsewhere)
           for what, (outside, elsewhere, _) in found.items()},
        **{f"{what}_in_botocore_debug_dumps": n for what, (_, _, n) in found.items()},
    )
    # The credentials were really used: requests carried the session token.
    assert secrets.token in gate.tokens["Kinesis"]
    assert secrets.token in gate.tokens["DynamoDB"]
    assert secrets.token in gate.tokens["S3"]
    assert {n for n, _ in capture.records if n.startswith("shardflow")}  # shardflow logged
    assert capture.exceptions >= 9
    for what, (outside, elsewhere, _) in found.items():
        assert outside == [], f"{what} logged by {outside}"
        assert elsewhere == [], f"{what} shown in {elsewhere}"


def test_cli_debug_output_shows_no_secret(kinesalite_url: str) -> None:
    secrets = Secrets()
    stream = create_stream(kinesalite_url)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), AWS_ACCESS_KEY_ID=secrets.access_key,
               AWS_SECRET_ACCESS_KEY=secrets.secret_key, AWS_SESSION_TOKEN=secrets.token)
    outputs = []
    for endpoint in (kinesalite_url, f"http://127.0.0.1:{free_port()}"):
        run = subprocess.run(
            [sys.executable, "-m", "shardflow", "put", stream, "--key", "k",
             "--endpoint-url", endpoint, "--debug"],
            input=b'{"a": 1}\n{"a": 2}\n', capture_output=True, timeout=120, env=env,
            check=False,
        )
        outputs.append((run.returncode, run.stdout + run.stderr))
    assert outputs[0][0] == 0, outputs[0][1].decode()
    assert outputs[1][0] != 0  # connection refused: an error, with --debug a traceback
    assert b"Traceback" in outputs[1][1]
    for _, text in outputs:
        assert secrets.secret_key.encode() not in text
        assert secrets.token.encode() not in text


# --- 2. loopback only ----------------------------------------------------------------------


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (Linux: /proc/net/tcp[6])."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    raw = bytes.fromhex(address)
                    if width == 8:
                        found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:  # four little-endian 32-bit words
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def other_local_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def assert_loopback_only(url: str) -> str:
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    addresses = listening_addresses(port)
    assert addresses == ["127.0.0.1"], f"{url} listens on {addresses}"
    other = other_local_address()
    if other is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((other, port), timeout=2).close()
    return f"{port}: {addresses}" + (f", refused via {other}" if other else "")


@contextmanager
def command(*args: str) -> Iterator[str]:
    """Run ``python -m <args>`` that prints its URL first; yield the URL."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_local_servers_and_proxies_listen_on_loopback_only(moto_url: str) -> None:
    checked = {}
    with local_endpoint() as url:
        checked["local_endpoint()"] = assert_loopback_only(url)
    async with FaultProxy(moto_url) as proxy:
        checked["FaultProxy"] = assert_loopback_only(proxy.url)
    for name, args in (
        ("shardflow local", ("shardflow", "local", "--quiet")),
        ("shardflow proxy", ("shardflow", "proxy", "--upstream", moto_url, "--quiet")),
        ("benchmark fake", ("benchmarks.fake_kinesis",)),
    ):
        with command(*args) as url:
            checked[name] = await anyio.to_thread.run_sync(assert_loopback_only, url)
    report("loopback only", servers=len(checked), **{k.replace(" ", "_"): v
                                                      for k, v in checked.items()})


# --- 3. file modes -------------------------------------------------------------------------


@contextmanager
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(paths: list[Path]) -> dict[str, str]:
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths if p.exists()}


async def test_spool_checkpoint_and_file_output_are_private(
    kinesalite_url: str, tmp_path: Path
) -> None:
    stream = create_stream(kinesalite_url)
    put_records(kinesalite_url, stream, [("k", b"one")])
    with permissive_umask():
        # A file created under this umask would be world-writable.
        probe = tmp_path / "probe"
        probe.touch()
        assert stat.S_IMODE(probe.stat().st_mode) & 0o077
        checkpoints = tmp_path / "checkpoints.db"
        async with Consumer(stream, endpoint_url=kinesalite_url, app_name="app",
                            checkpointer=SQLiteCheckpointer(checkpoints),
                            poll_interval=POLL) as consumer:
            [record] = await collect(consumer, 1)
            await consumer.checkpoint(record)
            open_checkpoint = modes([checkpoints, Path(f"{checkpoints}-wal"),
                                     Path(f"{checkpoints}-shm")])
        spool, lines = tmp_path / "spool.db", tmp_path / "events.ndjson"
        collector = Collector()
        collector.output("app.**", BufferedOutput(FileOutput(lines), spool=spool,
                                                  flush_interval=0.05))
        async with collector:
            await collector.post("app.event", {"n": 1})
            await collector.flush()
            open_spool = modes([spool, Path(f"{spool}-wal"), Path(f"{spool}-shm"), lines])
    found = {**open_checkpoint, **open_spool, **modes([checkpoints, spool, lines])}
    report("file modes under umask 000", files=found)
    assert {"checkpoints.db", "checkpoints.db-wal", "spool.db", "spool.db-wal",
            "events.ndjson"} <= set(found)
    assert set(found.values()) == {"0o600"}, found
