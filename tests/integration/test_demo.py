"""`shardflow demo` (what `make demo` runs), with few events: nothing lost, summary printed.

The summary's figures come from reading the archive back from S3; these tests check them
against each other and, for the run on the shared moto server, against S3 directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import boto3

from support import kinesis


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if any(a == "--endpoint-url" for a in args):
        env = dict(os.environ)  # the test's dummy credentials and region
    return subprocess.run(
        [sys.executable, "-m", "shardflow", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def figure(out: str, label: str) -> int:
    match = re.search(rf"^  {label} +([\d,]+)", out, re.MULTILINE)
    assert match is not None, f"no {label!r} line in:\n{out}"
    return int(match.group(1).replace(",", ""))


def test_demo_on_the_embedded_endpoint_loses_nothing() -> None:
    proc = run_demo("--events", "1500", "--users", "40")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    assert figure(out, "events posted") == 1500
    assert figure(out, "events in S3") == 1500
    assert figure(out, "lost") == 0
    lines = re.search(r"\(distinct event_id; ([\d,]+) lines in ([\d,]+) objects", out)
    assert lines is not None, out
    assert int(lines.group(1).replace(",", "")) == 1500 + figure(out, "duplicates")
    assert "embedded moto server at http://127.0.0.1:" in out
    assert re.search(r"latency post -> S3 +p50 [\d.]+ s, p99 [\d.]+ s", out), out
    assert re.search(r"throughput +[\d,]+ events/s posted", out), out
    archived = re.search(r"archived per worker +worker-1 ([\d,]+), worker-2 ([\d,]+)", out)
    assert archived is not None, out
    assert sum(int(n.replace(",", "")) for n in archived.groups()) >= 1500
    minutes = re.findall(r"^    \d\d:\d\d UTC +([\d,]+) events: view", out, re.MULTILINE)
    assert sum(int(n.replace(",", "")) for n in minutes) + late_events(out) == 1500
    assert "result                OK: nothing lost" in out
    # the progress display, on standard error
    assert re.search(r"\] \w+ +posted 1,500/1,500 · to Kinesis [\d,]+ · consumed", proc.stderr)
    assert "window closed:" in proc.stderr


def late_events(out: str) -> int:
    match = re.search(r"^  late events +([\d,]+)", out, re.MULTILINE)
    return 0 if match is None else int(match.group(1).replace(",", ""))


def test_demo_elsewhere_creates_and_then_deletes_its_resources(moto_url: str) -> None:
    proc = run_demo("--endpoint-url", moto_url, "--create", "--events", "400", "--users", "10",
                    "--shards", "2", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert figure(proc.stdout, "events in S3") == 400
    assert figure(proc.stdout, "lost") == 0
    assert f"endpoint              {moto_url}" in proc.stdout
    assert "[" not in proc.stderr  # --quiet: no progress lines

    streams = kinesis(moto_url).list_streams()["StreamNames"]
    assert not [s for s in streams if s.startswith("shardflow-demo-")]
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("shardflow-demo")]
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1")
    assert not [t for t in dynamodb.list_tables()["TableNames"] if t.startswith("shardflow-demo")]
