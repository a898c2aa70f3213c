"""Side by side: every producer contender on the same workload, each in its own process.

    python -m benchmarks.compare [--records N] [--only NAME ...] [--endpoint fake|moto|both]

For each endpoint (the fast fake Kinesis in its own process, and/or moto via
``python -m shardflow local``) and each contender in :data:`benchmarks.contenders.CONTENDERS`:
a fresh 4-shard stream, the contender in a subprocess, then what the endpoint received.
Prints a Markdown table per endpoint and writes ``benchmarks/results/compare.json``,
``compare.md`` and, with matplotlib installed, ``compare.png``. Each contender's standard
error goes to ``benchmarks/results/logs/<endpoint>-<contender>.log``.

Per contender: user records/s and client CPU µs per user record over its timed region
(getrusage in the contender's process), its peak RSS, and the user records the endpoint
received; a run that lost records (or wrote some twice) is marked. On the fake, a KPL
aggregate's sub-records count, and sub-records whose hash key falls outside the shard the
aggregate landed on (the KCL drops those) are reported as misrouted.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .common import (
    add_common_arguments,
    bench_env,
    fmt_bytes,
    fmt_float,
    fmt_int,
    machine_info,
    markdown_table,
    write_results,
)
from .contenders import CONTENDERS, module_name
from .fake_kinesis import FakeKinesis, fake_kinesis, hash_key

__all__ = ["main", "render_table", "run_contender"]

ROOT = Path(__file__).resolve().parent.parent
MOTO_DEFAULT_RECORDS = 10_000


@dataclass
class Endpoint:
    name: str
    url: str
    fake: FakeKinesis | None = None


def _client(url: str) -> Any:
    """A plain botocore client (dummy credentials) for setting up and reading back."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "kinesis", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
        aws_secret_access_key="bench", config=Config(retries={"max_attempts": 3}),
    )


def create_stream(url: str, name: str, shards: int) -> None:
    client = _client(url)
    client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} not ACTIVE after 60 s")


def count_stream(url: str, name: str) -> dict[str, int]:
    """Read a stream back (moto): Kinesis records, user records (aggregates' sub-records
    counted) and sub-records outside their aggregate's shard."""
    deaggregate: Callable[[bytes], list[tuple[str, str | None, bytes]] | None] | None
    try:
        from shardflow.aggregation import deaggregate
    except ImportError:  # pragma: no cover - the codec is part of shardflow
        deaggregate = None
    client = _client(url)
    shards = client.list_shards(StreamName=name)["Shards"]
    kinesis = users = misrouted = 0
    for shard in shards:
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        iterator = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                kinesis += 1
                subs = deaggregate(record["Data"]) if deaggregate is not None else None
                if not subs:
                    users += 1
                    continue
                users += len(subs)
                for pk, ehk, _ in subs:
                    value = int(ehk) if ehk is not None else hash_key(pk)
                    misrouted += not low <= value <= high
            iterator = page.get("NextShardIterator")
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
    return {"kinesis_records": kinesis, "user_records": users, "misrouted_user_records": misrouted}


@contextlib.contextmanager
def moto_endpoint() -> Iterator[Endpoint]:
    """moto, single-threaded, in its own process (``python -m shardflow local``)."""
    proc = subprocess.Popen([sys.executable, "-m", "shardflow", "local", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=bench_env())
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"moto did not start (printed {line!r})")
        yield Endpoint("moto", line)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@contextlib.contextmanager
def fake_endpoint(shards: int) -> Iterator[Endpoint]:
    with fake_kinesis(shards=shards) as fake:
        yield Endpoint("fake", fake.url, fake)


def run_contender(endpoint: Endpoint, name: str, *, records: int, shards: int,
                  timeout: float, logs: Path) -> dict[str, Any]:
    """Run one contender in a subprocess against ``endpoint``; its figures plus what the
    endpoint received and a ``verdict``."""
    stream = f"bench-{module_name(name)}-{uuid.uuid4().hex[:8]}".replace("_", "-")
    if endpoint.fake is not None:
        endpoint.fake.reset()
    create_stream(endpoint.url, stream, shards)
    before = endpoint.fake.stats() if endpoint.fake is not None else None
    cmd = [sys.executable, "-m", "benchmarks.contenders", name, "--url", endpoint.url,
           "--stream", stream, "--records", str(records)]
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{endpoint.name}-{name}.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE,
                                  stderr=log, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"name": name, "records": records, "status": "timeout",
                    "reason": f"no result after {timeout:.0f} s", "log": str(log_path)}
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        return {"name": name, "records": records, "status": "failed", "log": str(log_path),
                "reason": f"exit status {proc.returncode}, no result (see the log)"}
    result: dict[str, Any] = orjson.loads(lines[-1])
    result["log"] = str(log_path)
    result["wall_seconds_total"] = time.monotonic() - started
    if result.get("status") != "ok":
        return result
    if endpoint.fake is not None:
        after = endpoint.fake.stats()
        received = {k: after[k] for k in ("kinesis_records", "user_records",
                                          "misrouted_user_records", "rejected")}
        assert before is not None
        cpu = after["cpu_seconds"] - before["cpu_seconds"]
        result["endpoint_cpu_us_per_record"] = cpu * 1e6 / max(1, after["user_records"])
    else:
        received = count_stream(endpoint.url, stream)
    result["received"] = received
    got = received["user_records"] - int(result.get("extra_records", 0))
    result["verdict"] = ("ok" if got == records
                         else f"LOST {records - got:,}" if got < records
                         else f"DUPLICATES {got - records:,}")
    return result


def _note(result: dict[str, Any]) -> str:
    status = result.get("status")
    if status != "ok":
        return f"{status}: {result.get('reason', '')}".strip()
    notes = []
    if result.get("verdict") != "ok":
        notes.append(result["verdict"])
    received = result.get("received", {})
    if received.get("misrouted_user_records"):
        notes.append(f"{received['misrouted_user_records']:,} sub-records outside their "
                     "aggregate's shard (a KCL consumer drops them)")
    if received.get("rejected"):
        notes.append(f"rejected requests: {received['rejected']}")
    if result.get("aggregates"):
        notes.append(f"aggregated: {received.get('kinesis_records', 0):,} Kinesis records")
    return "; ".join(notes)


def _endpoint_note(results: Sequence[dict[str, Any]]) -> list[str]:
    """What the fake itself spent per record on the ceiling run: its capacity."""
    for r in results:
        cost = r.get("endpoint_cpu_us_per_record")
        if r.get("name") == "raw_aiohttp" and r.get("status") == "ok" and cost:
            return [f"The fake spent {cost:.2f} µs of CPU per record on the raw_aiohttp run: "
                    f"about {1e6 / cost:,.0f} records/s on one core.", ""]
    return []


def render_table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        ok = r.get("status") == "ok"
        received = r.get("received", {}).get("user_records") if ok else None
        if received is not None:
            received -= int(r.get("extra_records", 0))
        rows.append([
            r["name"],
            fmt_int(r.get("records_per_s")) if ok else "-",
            fmt_float(r.get("cpu_us_per_record")) if ok else "-",
            fmt_bytes(r.get("peak_rss_bytes")) if ok else "-",
            fmt_bytes(r.get("rss_growth_bytes")) if ok else "-",
            fmt_int(received) if received is not None else "-",
            _note(r),
        ])
    headers = ["contender", "user records/s", "client CPU µs/record", "peak RSS",
               "RSS growth", "received", "notes"]
    return markdown_table(headers, rows, align="lrrrrrl")


def write_chart(tables: dict[str, list[dict[str, Any]]], path: Path) -> str | None:
    """A PNG with records/s and µs/record per contender; a note instead without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    panels = [(ep, [r for r in rs if r.get("status") == "ok"]) for ep, rs in tables.items()]
    panels = [(ep, rs) for ep, rs in panels if rs]
    if not panels:
        return "nothing ran: no chart"
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 1.2 + 0.45 * max(
        len(rs) for _, rs in panels) * len(panels)), squeeze=False)
    for row, (ep, rs) in enumerate(panels):
        names = [r["name"] for r in rs][::-1]
        rate = [r["records_per_s"] for r in rs][::-1]
        cpu = [r["cpu_us_per_record"] for r in rs][::-1]
        for ax, values, title in ((axes[row][0], rate, "user records/s (more is better)"),
                                  (axes[row][1], cpu, "client CPU µs/record (less is better)")):
            ax.barh(names, values, color="#4477aa")
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 4, max(values) * 4)
            ax.set_title(f"{ep}: {title}", fontsize=10)
            for y, v in enumerate(values):
                ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.1f}", va="center",
                        fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_common_arguments(parser)
    parser.add_argument("--moto-records", type=int, default=None,
                        help=f"events per contender on moto (default: --records, at most "
                             f"{MOTO_DEFAULT_RECORDS:,}; moto takes ~4,000 records/s)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this contender (repeatable, or comma-separated)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds one contender may take (default 900)")
    parser.add_argument("--name", default="compare", help="results file name (default compare)")
    args = parser.parse_args(argv)

    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in only if "." not in n and module_name(n) not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; known: {', '.join(CONTENDERS)}")
    # A dotted name is any module that follows the contender protocol (tests use that).
    names = [n if "." in n else module_name(n) for n in only] or list(CONTENDERS)
    endpoints = ["fake", "moto"] if args.endpoint == "both" else [args.endpoint]
    moto_records = args.moto_records or min(args.records, MOTO_DEFAULT_RECORDS)
    out: Path = args.out
    logs = out / "logs"

    tables: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for ep in endpoints:
        records = args.records if ep == "fake" else moto_records
        counts[ep] = records
        opener = fake_endpoint(args.shards) if ep == "fake" else moto_endpoint()
        with opener as endpoint:
            results = []
            for name in names:
                print(f"[{ep}] {name}: {records:,} records ...", file=sys.stderr, flush=True)
                result = run_contender(endpoint, name, records=records, shards=args.shards,
                                       timeout=args.timeout, logs=logs)
                print(f"[{ep}] {name}: {result.get('status')} "
                      f"{fmt_int(result.get('records_per_s'))} records/s, "
                      f"{fmt_float(result.get('cpu_us_per_record'))} µs/record "
                      f"{_note(result)}", file=sys.stderr, flush=True)
                results.append(result)
            tables[ep] = results

    machine = machine_info()
    lines = [f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
             f"{machine['python']}; " + ", ".join(f"{k} {v}" for k, v in
                                                   machine["packages"].items()), ""]
    for ep, results in tables.items():
        where = ("fast fake Kinesis (benchmarks/fake_kinesis, its own process)" if ep == "fake"
                 else "moto server (python -m shardflow local, single-threaded)")
        lines += [f"### {counts[ep]:,} events of ~200 bytes, 1,000 partition keys, "
                  f"{args.shards} shards: {where}", "", render_table(results), ""]
        lines += _endpoint_note(results)
    command = "python -m benchmarks.compare " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])
    lines.append(f"Command: `{command.strip()}`")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text + "\n", encoding="utf-8")
    chart_note = write_chart(tables, out / f"{args.name}.png")
    path = write_results(args.name, {"command": command.strip(), "shards": args.shards,
                                     "records": counts, "results": tables}, directory=out)
    print(f"\nJSON: {path}", file=sys.stderr)
    print(chart_note or f"chart: {out / f'{args.name}.png'}", file=sys.stderr)
    failed = [r["name"] for rs in tables.values() for r in rs
              if r.get("status") in ("failed", "timeout") or r.get("verdict", "ok") != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
