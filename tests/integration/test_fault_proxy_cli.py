"""`shardflow proxy`: the fault proxy from a synchronous test or another process."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest
from botocore.config import Config

from support import create_stream, read_stream

PROXY = (sys.executable, "-m", "shardflow", "proxy")


def no_retry_client(url: str) -> object:
    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_proxy_command_throttles_and_reports(moto_url: str) -> None:
    stream = create_stream(moto_url)
    proc = subprocess.Popen(
        [*PROXY, "--upstream", moto_url, "--seed", "1", "--throttle", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = no_retry_client(url)
        records = [{"Data": f"d{i}".encode(), "PartitionKey": f"k{i}"} for i in range(50)]
        answer = client.put_records(StreamName=stream, Records=records)  # type: ignore[attr-defined]
        failed = answer["FailedRecordCount"]
        assert 0 < failed < 50
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"throttled_entries={failed}" in err
    assert len(read_stream(moto_url, stream)) == 50 - failed


def test_proxy_command_refuses_bad_options() -> None:
    done = subprocess.run(
        [*PROXY, "--upstream", "http://127.0.0.1:9", "--throttle", "1.5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--throttle must be between 0 and 1" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("flag", ["--help"])
def test_proxy_help_lists_every_fault(flag: str) -> None:
    done = subprocess.run([*PROXY, flag], capture_output=True, text=True)
    assert done.returncode == 0
    for option in (
        "--upstream", "--port", "--seed", "--throttle", "--internal-failure", "--5xx",
        "--reset-before", "--reset-after", "--latency", "--write-limits", "--read-limits",
        "--expire-iterators", "--read-throttle",
    ):  # fmt: skip
        assert option in done.stdout
