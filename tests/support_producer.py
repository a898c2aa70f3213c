"""A scripted Kinesis endpoint for producer tests, served by aiohttp in the test's loop.

It answers DescribeStreamSummary, ListShards and PutRecords over real HTTP (``shards``
shards splitting the hash-key space evenly; an entry goes where its ExplicitHashKey, else
the MD5 of its partition key, falls), keeps what it accepted
in order (its "stream"), checks every request's SigV4 signature with botocore's own
signer pieces, and lets a test decide the fate of each entry (``entry_error``) or of each
request (``request_error``), or stall PutRecords entirely (``stall``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

SECRET = {"testing": "testing"}  # access key -> secret key (tests/support isolates env);
# a test may add the keys it hands out


@dataclass
class Entry:
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    shard_id: str
    sequence_number: str


@dataclass
class Request:
    entries: list[dict[str, Any]]
    data_bytes: int  # data plus partition keys, as AWS counts
    signature_ok: bool
    access_key: str = ""
    security_token: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


EntryError = Callable[[int, int, dict[str, Any]], "tuple[str, str] | None"]
RequestError = Callable[[int], "tuple[int, str] | None"]


def verify_sigv4(method: str, url: str, headers: dict[str, str], body: bytes, region: str) -> bool:
    """Recompute the request's SigV4 signature with botocore and the request's own clock."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    access_key, date, req_region, service, _ = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    if req_region != region or service != "kinesis" or access_key not in SECRET:
        return False
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    timestamp = headers["X-Amz-Date"]
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(ReadOnlyCredentials(access_key, SECRET[access_key], None), "kinesis", region)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    # also check the date scope is the request's own date
    if date != timestamp[:8]:
        return False
    return hmac.compare_digest(expected, parts["Signature"])


class ScriptedKinesis:
    """``async with ScriptedKinesis("s") as k:`` then ``Producer("s", endpoint_url=k.url)``."""

    def __init__(
        self,
        stream: str = "s",
        *,
        shards: int = 2,
        entry_error: EntryError | None = None,
        request_error: RequestError | None = None,
        stall: bool = False,
        region: str = "us-east-1",
    ) -> None:
        self.stream = stream
        self.shards = shards
        self.entry_error = entry_error
        self.request_error = request_error
        self.stall = stall
        self.region = region
        self.requests: list[Request] = []
        self.accepted: list[Entry] = []
        self.connections = 0
        self.list_shards_calls = 0
        self.list_shards_error: str | None = None
        """An error code every ListShards call fails with (None: answer)."""
        self._generation = 0
        self._closed: list[dict[str, Any]] = []
        self._seq = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedKinesis:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    def shard_id(self, index: int) -> str:
        """The id of open shard ``index`` (ids change with each :meth:`reshard`)."""
        return f"shardId-{self._generation * 1000 + index:012d}"

    def shard_range(self, index: int) -> tuple[int, int]:
        """The hash-key range of open shard ``index``."""
        return -(-index * 2**128 // self.shards), -(-(index + 1) * 2**128 // self.shards) - 1

    def shard_item(self, index: int) -> dict[str, Any]:
        """Open shard ``index`` as ListShards describes it."""
        start, end = self.shard_range(index)
        return {
            "ShardId": self.shard_id(index),
            "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
            "SequenceNumberRange": {"StartingSequenceNumber": "0"},
        }

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Every shard's hash-key range, closed ones included."""
        out = {
            item["ShardId"]: (
                int(item["HashKeyRange"]["StartingHashKey"]),
                int(item["HashKeyRange"]["EndingHashKey"]),
            )
            for item in self._closed
        }
        out.update((self.shard_id(i), self.shard_range(i)) for i in range(self.shards))
        return out

    def reshard(self, shards: int) -> None:
        """Close every open shard and open ``shards`` new ones (with new ids) that split
        the hash-key space evenly, as a split or merge does on Kinesis."""
        for index in range(self.shards):
            item = self.shard_item(index)
            item["SequenceNumberRange"]["EndingSequenceNumber"] = f"{self._seq:056d}"
            self._closed.append(item)
        self._generation += 1
        self.shards = shards

    def release(self) -> None:
        """Let stalled requests go on."""
        self.stall = False
        self._release.set()

    def _error(self, status: int, code: str, message: str) -> web.Response:
        body = orjson.dumps({"__type": code, "message": message})
        return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        doc = orjson.loads(body) if body else {}
        if doc.get("StreamName") != self.stream and "StreamARN" not in doc:
            return self._error(400, "ResourceNotFoundException", "Stream not found")
        if target.endswith("DescribeStreamSummary"):
            return web.json_response(
                {
                    "StreamDescriptionSummary": {
                        "StreamName": self.stream,
                        "StreamARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{self.stream}",
                        "StreamStatus": "ACTIVE",
                        "RetentionPeriodHours": 24,
                        "StreamCreationTimestamp": 1700000000,
                        "EnhancedMonitoring": [],
                        "OpenShardCount": self.shards,
                    }
                },
                content_type="application/x-amz-json-1.1",
            )
        if target.endswith("ListShards"):
            self.list_shards_calls += 1
            if self.list_shards_error is not None:
                return self._error(500, self.list_shards_error, "scripted ListShards failure")
            return web.json_response(
                {"Shards": self._closed + [self.shard_item(i) for i in range(self.shards)]},
                content_type="application/x-amz-json-1.1",
            )
        if not target.endswith("PutRecords"):
            return self._error(400, "UnknownOperationException", target)
        entries = doc["Records"]
        decoded = [base64.b64decode(e["Data"]) for e in entries]
        size = sum(
            len(d) + len(e["PartitionKey"].encode()) for d, e in zip(decoded, entries, strict=False)
        )
        ok = verify_sigv4("POST", str(request.url), dict(request.headers), body, self.region)
        auth = request.headers.get("Authorization", "")
        access_key = auth.split("Credential=", 1)[-1].split("/", 1)[0]
        req = Request(entries, size, ok, access_key, request.headers.get("X-Amz-Security-Token"))
        self.requests.append(req)
        number = len(self.requests) - 1
        if self.stall:
            await self._release.wait()
        if self.request_error is not None:
            failure = self.request_error(number)
            if failure is not None:
                status, code = failure
                return self._error(status, code, "scripted request failure")
        if len(entries) > 500 or size > 5 * 1024 * 1024:
            return self._error(400, "InvalidArgumentException", "request too large")
        results = []
        failed = 0
        for index, (entry, data) in enumerate(zip(entries, decoded, strict=False)):
            error = self.entry_error(number, index, entry) if self.entry_error else None
            if error is not None:
                failed += 1
                results.append({"ErrorCode": error[0], "ErrorMessage": error[1]})
                continue
            key = entry["PartitionKey"]
            ehk = entry.get("ExplicitHashKey")
            hashed = int(ehk) if ehk else int(hashlib.md5(key.encode()).hexdigest(), 16)
            shard = hashed * self.shards >> 128
            self._seq += 1
            item = Entry(
                data,
                key,
                entry.get("ExplicitHashKey"),
                self.shard_id(shard),
                f"{self._seq:056d}",
            )
            self.accepted.append(item)
            results.append({"ShardId": item.shard_id, "SequenceNumber": item.sequence_number})
        req.results = results
        return web.json_response(
            {"FailedRecordCount": failed, "Records": results},
            content_type="application/x-amz-json-1.1",
        )
