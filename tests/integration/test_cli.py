"""The `shardflow` command line, run as a user would (`python -m shardflow ...`) against
the moto server: help, put/tail round trips, exit codes and messages for errors."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from support import create_stream, read_stream, unique_name


def shardflow(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardflow", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), "demo"),
        (("demo",), "--events"),
        (("put",), "--partition-key FIELD"),
        (("tail",), "--from WHEN"),
        (("local",), "--port"),
        (("proxy",), "--throttle"),
        (("bench",), "--suite"),  # ours, then python -m benchmarks --help
    ],
)
def test_help_of_every_command(command: tuple[str, ...], expected: str) -> None:
    proc = shardflow(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: shardflow" if command != ("bench",) else "usage:")
    assert expected in proc.stdout
    assert "--endpoint-url" in proc.stdout or command in (("local",), ("proxy",), ("bench",))


def test_put_then_tail_round_trip(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    events = [{"user_id": f"u{i % 7}", "n": i, "text": "héllo"} for i in range(60)]
    lines = [orjson.dumps(e).decode() for e in events]
    stdin = "\n".join(lines[:30]) + "\n\n" + "\r\n".join(lines[30:])  # an empty line, CRLF

    put = shardflow("--endpoint-url", moto_url, "put", stream, "--partition-key", "user_id",
                    stdin=stdin)
    assert put.returncode == 0, put.stderr
    assert f"put 60 of 60 records into {stream}" in put.stderr
    assert "0 failed, 1 empty lines skipped" in put.stderr

    tail = shardflow("tail", stream, "--endpoint-url", moto_url, "--from", "trim",
                     "--limit", "60", "--json")
    assert tail.returncode == 0, tail.stderr
    printed = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert sorted(p["data"]["n"] for p in printed) == list(range(60))
    for p in printed:
        assert p["data"] == events[p["data"]["n"]]
        assert p["partition_key"] == p["data"]["user_id"]
        assert p["shard_id"].startswith("shardId-")
        assert p["arrival_time"].endswith("Z")
    per_shard: dict[str, list[int]] = {}
    for p in printed:
        per_shard.setdefault(p["shard_id"], []).append(int(p["sequence_number"]))
    assert all(seqs == sorted(seqs) for seqs in per_shard.values())  # in order per shard

    raw = shardflow("--endpoint-url", moto_url, "tail", stream, "--from", "trim", "-n", "5")
    assert raw.returncode == 0, raw.stderr
    assert len(raw.stdout.splitlines()) == 5
    assert all(line in lines for line in raw.stdout.splitlines())


def test_put_fixed_key_aggregated_from_a_file_then_tail_pretty(
    moto_url: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_url, shards=1)
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"plain line {i}\n" for i in range(25)))
    put = shardflow("--endpoint-url", moto_url, "put", stream, "--file", str(path), "--key", "k1",
                    "--aggregate")
    assert put.returncode == 0, put.stderr
    assert "put 25 of 25 records" in put.stderr

    tail = shardflow("--endpoint-url", moto_url, "tail", stream, "--from", "trim",
                     "--limit", "25", "--json", "pretty")
    assert tail.returncode == 0, tail.stderr
    decoder_input = "[" + tail.stdout.replace("}\n{", "},\n{") + "]"
    printed = orjson.loads(decoder_input)
    assert [p["data_text"] for p in printed] == [f"plain line {i}" for i in range(25)]
    assert {p["partition_key"] for p in printed} == {"k1"}
    assert '\n  "shard_id"' in tail.stdout  # indented


def test_put_reports_bad_lines_and_delivers_the_rest(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=1)
    stdin = '{"user_id": "a"}\nnot json\n{"other": 1}\n{"user_id": 42}\n{"user_id": ""}\n'
    put = shardflow("--endpoint-url", moto_url, "put", stream, "-k", "user_id", stdin=stdin)
    assert put.returncode == 1
    assert "line 2: not JSON, so it has no field 'user_id'" in put.stderr
    assert "line 3: no field 'user_id'" in put.stderr
    assert "line 5: the partition key must have 1 to 256 characters" in put.stderr
    assert "put 2 of 5 records" in put.stderr
    assert "3 failed" in put.stderr
    assert "Traceback" not in put.stderr
    stored = read_stream(moto_url, stream)
    assert sorted(r["PartitionKey"] for r in stored) == ["42", "a"]


def test_put_create_makes_the_stream(moto_url: str) -> None:
    stream = unique_name("created")
    put = shardflow("--endpoint-url", moto_url, "put", stream, "--create", "2",
                    stdin="one\ntwo\n")
    assert put.returncode == 0, put.stderr
    assert sorted(r["Data"] for r in read_stream(moto_url, stream)) == [b"one", b"two"]


@pytest.mark.parametrize("command", ["put", "tail"])
def test_missing_stream_is_a_message_and_exit_1(moto_url: str, command: str) -> None:
    proc = shardflow("--endpoint-url", moto_url, command, "no-such-stream", stdin="x\n")
    assert proc.returncode == 1
    hint = " (create it with --create SHARDS)" if command == "put" else ""
    assert proc.stderr.startswith(
        f"shardflow {command}: stream 'no-such-stream' not found in region us-east-1 at "
        f"{moto_url} "
    )
    assert proc.stderr.endswith(f"{hint}\n")
    assert proc.stderr.count("\n") == 1


def test_debug_shows_the_traceback(moto_url: str) -> None:
    proc = shardflow("--endpoint-url", moto_url, "tail", "no-such-stream", "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "StreamNotFound" in proc.stderr


def test_unreachable_endpoint_is_a_message() -> None:
    proc = shardflow("--endpoint-url", "http://127.0.0.1:9", "tail", "logs")
    assert proc.returncode == 1
    assert "shardflow tail: cannot reach http://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tail", "logs", "--from", "yesterday"), "--from takes trim, latest or an ISO 8601"),
        (("tail", "logs", "--limit", "0"), "must be at least 1"),
        (("put",), "the following arguments are required: STREAM"),
        (("put", "logs", "--key", "a", "--partition-key", "b"), "not allowed with argument"),
        (("put", "logs", "--no-such-option"), "unrecognized arguments"),
        (("demo", "--events", "many"), "not a whole number"),
        (("demo", "--shards", "65"), "shards must be a whole number from 1 to 64"),
        (("nonsense",), "invalid choice"),
        ((), "usage: shardflow"),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = shardflow(*args)
    assert proc.returncode == 2
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_demo_elsewhere_needs_create(moto_url: str) -> None:
    proc = shardflow("demo", "--endpoint-url", moto_url)
    assert proc.returncode == 2
    assert "pass --create to allow it" in proc.stderr


def test_tail_idle_timeout_ends_a_quiet_stream(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=1)
    proc = shardflow("--endpoint-url", moto_url, "tail", stream, "--idle-timeout", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_bench_passes_options_to_the_benchmarks() -> None:
    proc = shardflow("bench", "--suite", "no-such-suite")
    assert proc.returncode == 2  # python -m benchmarks' own argument error
    assert "invalid choice: 'no-such-suite'" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("local", "--port", "x", "--debug"), "argument --port: invalid int value: 'x'"),
        (("proxy", "--upstream", "http://127.0.0.1:9", "--throttle", "2", "--debug"),
         "shardflow proxy: error: --throttle must be between 0 and 1"),
        (("demo", "--shards", "65", "--region", "eu-west-1"),
         "shardflow demo: error: --shards must be a whole number from 1 to 64"),
        (("tail", "s", "--region", "EU_WEST"), "--region must be a region such as"),
        (("put", "s", "--endpoint-url", "localhost:4567"),
         "--endpoint-url must be an http:// or https:// URL"),
        (("put", "arn:aws:kinesis:nowhere"), "not a Kinesis stream ARN"),
        (("tail", ""), "STREAM must be a non-empty stream name or ARN"),
    ],
)
def test_global_options_anywhere_and_usage_errors_name_flags(
    args: tuple[str, ...], message: str
) -> None:
    """Global options are taken after any command; a usage error exits 2 and names the
    flag the user typed, never a Python parameter (region_name, throttle_fraction)."""
    proc = shardflow(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "unrecognized arguments" not in proc.stderr
    assert not re.search(r"\b[a-z]+_[a-z_]+ must\b", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_takes_debug_anywhere() -> None:
    proc = shardflow("bench", "--suite", "no-such-suite", "--debug")
    assert proc.returncode == 2  # python -m benchmarks' own error, not about --debug
    assert "invalid choice: 'no-such-suite'" in proc.stderr
    assert "--debug" not in proc.stderr


def test_tail_from_latest_says_it_waits_for_new_records(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=1)
    latest = shardflow("tail", stream, "--idle-timeout", "0.5", "--endpoint-url", moto_url)
    assert latest.returncode == 0, latest.stderr
    assert latest.stderr == (
        f"shardflow tail: waiting for new records in {stream} (Ctrl-C stops; --from trim "
        "shows the records already in the stream)\n"
    )
    trim = shardflow("tail", stream, "--from", "trim", "--idle-timeout", "0.5",
                     "--endpoint-url", moto_url)
    assert trim.returncode == 0, trim.stderr
    assert trim.stderr == ""


def test_ctrl_c_during_put_reports_what_was_sent(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "put", stream, "--endpoint-url", moto_url],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    proc.stdin.write("one\ntwo\nthree\n")
    proc.stdin.flush()  # stdin stays open: the command waits for more lines
    deadline = time.monotonic() + 30
    while len(read_stream(moto_url, stream)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=15)  # at once, although stdin is still open
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert code == 130
    report = re.fullmatch(
        rf"shardflow put: interrupted after 3 lines: (\d) records delivered to {stream}, "
        r"0 failed, (\d) not confirmed \(they may or may not be in the stream\)\n",
        stderr,
    )
    assert report is not None, stderr
    # The stream has all three; an answer still on its way when Ctrl-C came is "not
    # confirmed", never lost from the count.
    assert int(report[1]) + int(report[2]) == 3


@pytest.mark.parametrize("command", [("local",), ("proxy", "--upstream", "http://127.0.0.1:9")])
def test_a_port_in_use_is_one_line(command: tuple[str, ...]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = shardflow(*command, "--port", str(port), "--quiet")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"shardflow {command[0]}: port {port} is in use (pass another --port, or --port 0 "
        "for any free one)\n"
    )
