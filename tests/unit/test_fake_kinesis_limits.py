"""The benchmark fake Kinesis rejects what AWS rejects, in AWS's error shape, and speaks
plain HTTP/1.1 correctly (keep-alive, pipelining, Connection: close, latency)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import support_bench  # noqa: F401  (puts the repository root on sys.path)
from benchmarks.fake_kinesis import FakeKinesis, fake_kinesis

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKinesis]:
    with fake_kinesis(shards=4) as running:
        yield running


def client(url: str) -> Any:
    # parameter_validation off: the request reaches the fake even where botocore would
    # have refused it (an empty partition key), as from a client without validation.
    return boto3.client("kinesis", endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, parameter_validation=False))


def rejected(fake: FakeKinesis, records: list[dict[str, Any]]) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        client(fake.url).put_records(StreamName="limits", Records=records)
    response = err.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    code = response["Error"]["Code"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
    return code, response["Error"]["Message"]


def test_batch_limits_are_inclusive(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    full = [{"Data": b"x", "PartitionKey": "k"}] * 500
    assert kinesis.put_records(StreamName="limits", Records=full)["FailedRecordCount"] == 0
    # Exactly 5 MiB of data plus partition keys, and a record of exactly 1 MiB.
    key = "k"
    biggest = [{"Data": b"x" * (MiB - 1), "PartitionKey": key}] * 5
    assert kinesis.put_records(StreamName="limits", Records=biggest)["FailedRecordCount"] == 0
    one = kinesis.put_records(StreamName="limits",
                              Records=[{"Data": b"y" * MiB, "PartitionKey": "p" * 256}])
    assert one["FailedRecordCount"] == 0


def test_too_many_records(fake: FakeKinesis) -> None:
    code, message = rejected(fake, [{"Data": b"x", "PartitionKey": "k"}] * 501)
    assert code == "ValidationException"
    assert "at 'records'" in message
    assert "less than or equal to 500" in message


def test_empty_batch(fake: FakeKinesis) -> None:
    code, message = rejected(fake, [])
    assert code == "ValidationException"
    assert "greater than or equal to 1" in message


def test_record_over_1_mib(fake: FakeKinesis) -> None:
    code, message = rejected(fake, [{"Data": b"x", "PartitionKey": "k"},
                                    {"Data": b"x" * (MiB + 1), "PartitionKey": "k"}])
    assert code == "ValidationException"
    assert "records.2.member.data" in message
    assert "1048576" in message


def test_request_over_5_mib(fake: FakeKinesis) -> None:
    # 5 MiB of data plus two bytes of partition keys.
    records = [{"Data": b"x" * MiB, "PartitionKey": "k"}] * 5
    code, message = rejected(fake, records)
    assert (code, message) == ("InvalidArgumentException", "Records size exceeds 5 MB limit")


@pytest.mark.parametrize(("key", "words"), [
    ("", "greater than or equal to 1"),
    ("k" * 257, "less than or equal to 256"),
])
def test_partition_key_length(fake: FakeKinesis, key: str, words: str) -> None:
    code, message = rejected(fake, [{"Data": b"x", "PartitionKey": key}])
    assert code == "ValidationException"
    assert "records.1.member.partitionKey" in message
    assert words in message


def test_several_violations_are_listed(fake: FakeKinesis) -> None:
    code, message = rejected(fake, [{"Data": b"x", "PartitionKey": ""},
                                    {"Data": b"x" * (MiB + 1), "PartitionKey": "k"}])
    assert code == "ValidationException"
    assert message.startswith("2 validation errors detected")


@pytest.mark.parametrize(("ehk", "expected"), [
    ("abc", "ValidationException"),
    ("007", "ValidationException"),
    (str(2**128), "InvalidArgumentException"),
])
def test_explicit_hash_key(fake: FakeKinesis, ehk: str, expected: str) -> None:
    code, _ = rejected(fake, [{"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": ehk}])
    assert code == expected


def test_rejections_are_counted_and_change_nothing(fake: FakeKinesis) -> None:
    fake.reset()
    kinesis = client(fake.url)
    with pytest.raises(ClientError):
        kinesis.put_records(StreamName="limits", Records=[
            {"Data": b"ok", "PartitionKey": "k"}, {"Data": b"x", "PartitionKey": ""}])
    with pytest.raises(ClientError):
        kinesis.put_record(StreamName="limits", Data=b"x" * (MiB + 1), PartitionKey="k")
    stats = fake.stats()
    assert stats["kinesis_records"] == 0
    assert stats["user_records"] == 0
    assert stats["rejected"] == {"bad_partition_key": 1, "record_too_large": 1}
    # Sequence numbers did not advance for the refused entries.
    first = kinesis.put_records(StreamName="limits", Records=[
        {"Data": b"ok", "PartitionKey": "k"}])["Records"][0]["SequenceNumber"]
    assert first.endswith("1".zfill(20))


# --- raw HTTP ---------------------------------------------------------------------------


def post(conn: http.client.HTTPConnection, op: str, body: dict[str, Any]) -> tuple[int, Any]:
    conn.request("POST", "/", body=orjson.dumps(body), headers={
        "X-Amz-Target": f"Kinesis_20131202.{op}",
        "Content-Type": "application/x-amz-json-1.1"})
    resp = conn.getresponse()
    return resp.status, orjson.loads(resp.read())


def connect(fake: FakeKinesis) -> http.client.HTTPConnection:
    host, port = fake.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def test_bad_base64_and_bad_json_and_unknown_operation(fake: FakeKinesis) -> None:
    conn = connect(fake)
    status, body = post(conn, "PutRecords", {"StreamName": "raw", "Records": [
        {"Data": "not base64!", "PartitionKey": "k"}]})
    assert (status, body["__type"]) == (400, "SerializationException")
    status, body = post(conn, "PutRecords", {"StreamName": "raw", "Records": [
        {"Data": "QQ==QQ==", "PartitionKey": "k"}]})
    assert (status, body["__type"]) == (400, "SerializationException")
    status, body = post(conn, "PutRecords", {"StreamName": "raw", "Records": [
        {"PartitionKey": "k"}]})
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "must not be null" in body["message"]
    status, body = post(conn, "FlyToTheMoon", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    conn.request("POST", "/", body=b"{nope", headers={
        "X-Amz-Target": "Kinesis_20131202.ListShards"})
    resp = conn.getresponse()
    assert resp.status == 400
    assert orjson.loads(resp.read())["__type"] == "SerializationException"
    # The connection survived every error (keep-alive).
    status, body = post(conn, "ListShards", {"StreamName": "raw"})
    assert status == 200
    assert len(body["Shards"]) == 4
    conn.request("GET", "/nowhere")
    assert conn.getresponse().status == 404
    conn.close()


def test_pipelined_requests_are_answered_in_order(fake: FakeKinesis) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    requests = b""
    for i in range(5):
        body = orjson.dumps({"StreamName": "pipe", "Records": [
            {"Data": "QUJD", "PartitionKey": f"k{i}", "ExplicitHashKey": "0"}]})
        requests += (b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.PutRecords"
                     b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    requests += b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(requests)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk  # the server closes after the last answer (Connection: close)
    answers = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 6
    counters = [int(orjson.loads(a.split(b"\r\n\r\n", 1)[1])["Records"][0]["SequenceNumber"])
                for a in answers[:5]]
    assert counters == sorted(counters)
    assert len(set(counters)) == 5


def test_latency_delays_every_answer() -> None:
    with fake_kinesis(shards=1, latency=0.3) as slow:
        conn = connect(slow)
        started = time.monotonic()
        status, _ = post(conn, "ListShards", {"StreamName": "slow"})
        status2, _ = post(conn, "ListShards", {"StreamName": "slow"})
        elapsed = time.monotonic() - started
        assert status == status2 == 200
        assert elapsed >= 0.59  # two answers, each held back 0.3 s (a lower bound only)
        conn.close()


def test_expect_continue_and_chunked_bodies(fake: FakeKinesis) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    body = orjson.dumps({"StreamName": "expect"})
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListShards\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    # Chunked request bodies are refused (botocore and aiohttp send Content-Length).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 411 ")
        assert sock.recv(65536) == b""  # and the connection is closed
