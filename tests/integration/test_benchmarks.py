"""The side-by-side benchmark harness: contenders run in their own processes, the runner
counts what the endpoint received and marks runs that lost records.

Small runs only (hundreds of records); no figure is asserted beyond being measured.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

import support_bench
from benchmarks import compare
from benchmarks.common import bench_env

CONTENDER_TEMPLATE = '''
from __future__ import annotations

import botocore.session

NAME = "{name}"
DESCRIPTION = "written by a test"
AGGREGATES = {aggregates}


def unavailable():
    return {unavailable!r}


def run(ctx):
    client = botocore.session.get_session().create_client(
        "kinesis", endpoint_url=ctx.url, region_name=ctx.region)
    with ctx.timer:
        {body}
'''


def write_contender(root: Path, name: str, body: str, *, aggregates: bool = False,
                    unavailable: str | None = None) -> str:
    package = root / "bench_contenders_for_tests"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    source = CONTENDER_TEMPLATE.format(name=name, aggregates=aggregates,
                                       unavailable=unavailable,
                                       body=textwrap.indent(textwrap.dedent(body), " " * 8)
                                       .lstrip())
    (package / f"{name}.py").write_text(source)
    return f"bench_contenders_for_tests.{name}"


def run_compare(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    code = compare.main([*args, "--out", str(tmp_path / "out"), "--timeout", "120"])
    doc = orjson.loads((tmp_path / "out" / "compare.json").read_bytes())
    table = (tmp_path / "out" / "compare.md").read_text()
    return code, doc, table


@pytest.fixture
def contenders_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on the contender processes' PYTHONPATH for modules a test writes."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_contenders_run_and_what_arrived_is_counted(tmp_path: Path) -> None:
    code, doc, table = run_compare(
        tmp_path, "--records", "600", "--endpoint", "fake",
        "--only", "raw_aiohttp,aiobotocore_naive,boto3_sequential")
    assert code == 0
    results = doc["results"]["fake"]
    assert [r["name"] for r in results] == ["raw_aiohttp", "aiobotocore_naive",
                                            "boto3_sequential"]
    for r in results:
        assert r["status"] == "ok", r
        assert r["verdict"] == "ok"
        assert r["received"]["user_records"] == 600
        assert r["received"]["kinesis_records"] == 600
        assert r["records_per_s"] > 0
        assert r["cpu_seconds"] > 0
        assert r["peak_rss_bytes"] > 0
    assert doc["machine"]["cpu_count"] >= 1
    assert "aiobotocore" in doc["machine"]["packages"]
    assert "| raw_aiohttp " in table
    assert "client CPU µs/record" in table
    chart = tmp_path / "out" / "compare.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert not chart.exists()  # the bench extra is not installed: a note, no chart
    else:
        assert chart.read_bytes().startswith(b"\x89PNG")


def test_a_run_that_lost_records_is_marked(tmp_path: Path, contenders_path: Path) -> None:
    lossy = write_contender(contenders_path, "lossy", """
        half = ctx.events[: len(ctx.events) // 2]
        for i in range(0, len(half), 500):
            client.put_records(StreamName=ctx.stream, Records=[
                {"Data": b"{}", "PartitionKey": key} for key, _ in half[i:i + 500]])
    """)
    code, doc, table = run_compare(tmp_path, "--records", "600", "--endpoint", "fake",
                                   "--only", lossy)
    assert code == 1
    (result,) = doc["results"]["fake"]
    assert result["status"] == "ok"
    assert result["verdict"] == "LOST 300"
    assert result["received"]["user_records"] == 300
    assert "LOST 300" in table


def test_unavailable_and_failing_contenders_are_reported(
    tmp_path: Path, contenders_path: Path
) -> None:
    missing = write_contender(contenders_path, "missing", "pass",
                              unavailable="needs a library that is not installed")
    broken = write_contender(contenders_path, "broken", "raise RuntimeError('boom')")
    code, doc, table = run_compare(tmp_path, "--records", "100", "--endpoint", "fake",
                                   "--only", f"{missing},{broken}")
    assert code == 1
    by_name = {r["name"]: r for r in doc["results"]["fake"]}
    assert by_name[missing]["status"] == "unavailable"
    assert by_name[missing]["reason"] == "needs a library that is not installed"
    assert by_name[broken]["status"] == "failed"
    assert "RuntimeError: boom" in by_name[broken]["reason"]
    assert "unavailable: needs a library that is not installed" in table
    assert Path(by_name[broken]["log"]).read_text().count("RuntimeError") >= 1


def test_on_moto_records_are_read_back_and_aggregates_checked(
    tmp_path: Path, contenders_path: Path
) -> None:
    # One aggregate whose sub-records hash to every shard: a KCL consumer drops those
    # outside the shard the aggregate lands on, and the runner says how many.
    mixed = write_contender(contenders_path, "mixed", """
        from shardflow.aggregation import aggregate
        blob = aggregate([(key, None, b"{}") for key, _ in ctx.events])
        client.put_records(StreamName=ctx.stream, Records=[
            {"Data": blob, "PartitionKey": ctx.events[0][0]}])
    """, aggregates=True)
    code, doc, table = run_compare(tmp_path, "--records", "200", "--endpoint", "moto",
                                   "--only", f"boto3_sequential,{mixed}")
    assert code == 0
    plain, agg = doc["results"]["moto"]
    assert plain["received"] == {"kinesis_records": 200, "user_records": 200,
                                 "misrouted_user_records": 0}
    assert agg["received"]["kinesis_records"] == 1
    assert agg["received"]["user_records"] == 200
    assert 0 < agg["received"]["misrouted_user_records"] < 200
    assert "outside their aggregate's shard" in table


def test_python_m_benchmarks(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--suite", "compare", "--records", "300",
         "--endpoint", "fake", "--only", "raw_aiohttp", "--out", str(out)],
        cwd=support_bench.ROOT, env=bench_env(), capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "| raw_aiohttp " in proc.stdout.decode()
    doc = orjson.loads((out / "compare.json").read_bytes())
    assert doc["results"]["fake"][0]["received"]["user_records"] == 300
    listing = subprocess.run([sys.executable, "-m", "benchmarks", "--help"],
                             cwd=support_bench.ROOT, env=bench_env(), capture_output=True,
                             timeout=60, check=True)
    for suite in ("compare", "producer", "consumer", "aggregation"):
        assert suite in listing.stdout.decode()
