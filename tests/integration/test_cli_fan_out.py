"""`shardflow tail --fan-out` and `shardflow consumers` on kinesis-mock, run as a user
would (`python -m shardflow ...`): records read through a registered stream consumer,
the consumers listed, one deregistered."""

from __future__ import annotations

import subprocess
import sys

from support import unique_name
from support_consumer import put_records
from support_fan_out import consumers, create_mock_stream, kinesis_mock_url  # noqa: F401


def shardflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shardflow", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_tail_fan_out_then_list_and_deregister(kinesis_mock_url: str) -> None:  # noqa: F811
    url = kinesis_mock_url
    name = unique_name("fo")
    arn = create_mock_stream(url, name, shards=2)
    put_records(url, name, [(f"k{i}", f"line {i}".encode()) for i in range(20)])

    tail = shardflow("--endpoint-url", url, "tail", name, "--fan-out", "--from", "trim",
                     "--limit", "20")
    assert tail.returncode == 0, tail.stderr
    assert sorted(tail.stdout.splitlines()) == sorted(f"line {i}" for i in range(20))
    assert [c["ConsumerName"] for c in consumers(url, arn)] == ["shardflow-tail"]

    listed = shardflow("--endpoint-url", url, "consumers", name)
    assert listed.returncode == 0, listed.stderr
    assert "shardflow-tail" in listed.stdout
    assert "ACTIVE" in listed.stdout

    gone = shardflow("--endpoint-url", url, "consumers", name, "--deregister", "shardflow-tail")
    assert gone.returncode == 0, gone.stderr
    assert "deregistered 'shardflow-tail'" in gone.stderr
    assert [c["ConsumerStatus"] for c in consumers(url, arn)] in ([], ["DELETING"])

    bad = shardflow("--endpoint-url", url, "tail", name, "--fan-out", "not a name")
    assert bad.returncode != 0
    assert "stream consumer name" in bad.stderr


def test_the_proxy_command_breaks_subscriptions_too() -> None:
    help_text = shardflow("proxy", "--help").stdout
    for flag in ("--subscription-in-use", "--subscription-limit", "--cut-subscriptions-after",
                 "--fail-subscriptions-after"):
        assert flag in help_text
    bad = shardflow("proxy", "--upstream", "http://127.0.0.1:1", "--subscription-limit", "2")
    assert bad.returncode == 2
    assert "--subscription-limit must be between 0 and 1" in bad.stderr
