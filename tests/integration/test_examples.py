"""Each example in examples/ runs end to end on the embedded endpoint and shows its result.

(collector_quickstart.py, consumer_group.py and lambda_handler.py have their own tests:
test_collector_quickstart.py, test_leases_example.py and test_lambda_events.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from support import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str, **aws_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_run_by_a_test() -> None:
    tested_elsewhere = {"collector_quickstart.py", "consumer_group.py", "lambda_handler.py",
                        "prometheus_metrics.py"}  # test_metrics_prometheus.py
    here = {"producer_quickstart.py", "consumer_quickstart.py", "archive_to_s3.py",
            "web_service.py"}
    examples = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert examples == here | tested_elsewhere


def test_producer_quickstart() -> None:
    out = run_example("producer_quickstart.py")
    assert re.search(r"put_and_wait: shard shardId-\d+, sequence \d+, 1 attempt", out), out
    assert "refused at put(): partition_key must have 1 to 256 characters" in out
    delivered = re.search(r"delivered (\d+) records: (.+)", out)
    assert delivered is not None, out
    assert int(delivered.group(1)) == 100
    per_shard = [int(n) for n in re.findall(r"shardId-\d+ (\d+)", delivered.group(2))]
    assert len(per_shard) == 2
    assert sum(per_shard) == 100
    assert "101 delivered, 0 failed" in out
    assert re.search(r"aggregate=True: \d+ of 1000 records went in KPL aggregates", out)


def test_consumer_quickstart_resumes_from_checkpoints() -> None:
    out = run_example("consumer_quickstart.py")
    assert "first run: processed 30 orders" in out
    assert "second run: resumed from the checkpoints and processed 20 orders" in out
    assert "50 distinct orders of 50, 0 processed twice" in out


def test_archive_to_s3() -> None:
    out = run_example("archive_to_s3.py")
    archived = re.search(r"archived (\d+) records in (\d+) objects", out)
    assert archived is not None, out
    assert int(archived.group(1)) == 500
    keys = re.findall(r"s3://clickstream-archive/(\S+)", out)
    assert len(keys) == int(archived.group(2)) >= 2  # objects never mix shards: 2 at least
    layout = r"clicks/\d{4}/\d\d/\d\d/\d\d/clickstream-shardId-\d+-\d+-\d+\.ndjson\.gz"
    assert all(re.fullmatch(layout, key) for key in keys), keys
    assert re.search(r'first line of the first object: \{"user_id":"user-\d+"', out)


def test_web_service_logs_every_request() -> None:
    out = run_example("web_service.py")
    statuses = re.findall(r"^  (GET|POST) (\S+) -> (\d+)$", out, re.MULTILINE)
    logged = re.findall(r"^  web\.request (GET|POST) (\S+) (\d+) [\d.]+ ms \(service=shop\)$",
                        out, re.MULTILINE)
    assert len(statuses) == 5, out
    assert sorted(logged) == sorted(statuses), out
    assert ("GET", "/items/seven", "404") in logged
    assert "5 requests logged" in out



@pytest.mark.parametrize(
    "name",
    ["producer_quickstart.py", "consumer_quickstart.py", "archive_to_s3.py",
     "collector_quickstart.py"],
)
def test_examples_run_with_a_region_in_the_environment(name: str) -> None:
    """Most AWS users have a region set: the examples' stream and bucket are created, and
    found, in that region (issue: every example failed with StreamNotFound)."""
    run_example(name, AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="ap-southeast-2")
