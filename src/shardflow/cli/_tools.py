"""``shardflow bench``, ``shardflow local`` and ``shardflow proxy``: commands that run
another program or a server in the foreground (see :mod:`shardflow.cli`)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench", "add_local", "add_proxy", "flags_named", "usage"]

log = logging.getLogger("shardflow.cli")


_FLAGS = {
    "endpoint_url": "--endpoint-url",
    "region_name": "--region",
    "events": "--events",
    "shards": "--shards",
    "users": "--users",
    "upstream_url": "--upstream",
    "port": "--port",
    "seed": "--seed",
    "throttle_fraction": "--throttle",
    "internal_failure_fraction": "--internal-failure",
    "error_5xx_fraction": "--5xx",
    "reset_before_fraction": "--reset-before",
    "reset_after_fraction": "--reset-after",
    "latency": "--latency",
    "expire_iterator_fraction": "--expire-iterators",
    "read_throttle_fraction": "--read-throttle",
    "subscription_in_use_fraction": "--subscription-in-use",
    "subscription_limit_fraction": "--subscription-limit",
    "cut_subscription_after": "--cut-subscriptions-after",
    "fail_subscription_after": "--fail-subscriptions-after",
    "operations": "--operations",
}
_OPTION = re.compile(r"\b(" + "|".join(_FLAGS) + r")\b(?= must\b)")


def flags_named(message: str) -> str:
    """A library validation message with its Python parameter names replaced by the flags
    that set them (``region_name must ...`` -> ``--region must ...``)."""
    return _OPTION.sub(lambda match: _FLAGS[match[1]], message)


def usage(command: str, message: str) -> int:
    """Print a usage error for ``command``; returns the exit status 2."""
    print(f"shardflow {command}: error: {flags_named(message)}", file=sys.stderr)
    return 2


# --- bench ---------------------------------------------------------------------------------


def _benchmarks_root() -> Path | None:
    """The folder holding the ``benchmarks`` package: the current directory or the
    checkout this shardflow is installed from (``pip install -e .``)."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[3]]
    for root in candidates:
        if (root / "benchmarks" / "__main__.py").is_file():
            return root
    spec = importlib.util.find_spec("benchmarks")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parents[1]
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    passed: list[str] = args.passthrough
    if any(a in ("-h", "--help") for a in passed):
        print(_BENCH_HELP.rstrip())
        print()
    root = _benchmarks_root()
    if root is None:
        print(
            "shardflow bench: the benchmarks are not installed with the package; they live in "
            "the repository's benchmarks/ folder. Run this from a clone (git clone ..., "
            "pip install -e '.[dev,bench]'), or there: python -m benchmarks",
            file=sys.stderr,
        )
        return 1
    command = [sys.executable, "-m", "benchmarks", *passed]
    log.debug("running %s in %s", command, root)
    return subprocess.call(command, cwd=root)


_BENCH_HELP = """\
usage: shardflow bench [OPTIONS ...]

Run the benchmark suites kept in the repository's benchmarks/ folder (from a clone):
shardflow and the other Python Kinesis libraries side by side, the producer, consumer,
aggregation, collector and sink suites. Every option is passed on; they are listed
below."""


def add_bench(sub: Any) -> None:
    """``--debug`` (the one global option that means something here) may come anywhere;
    every other option goes to the benchmarks."""
    p = sub.add_parser(
        "bench",
        add_help=False,
        help="run the benchmarks (in a clone of the repository; options are passed on)",
    )
    p.set_defaults(handler=_cmd_bench, passthrough=[])


# --- local / proxy -------------------------------------------------------------------------


def _cmd_local(args: argparse.Namespace) -> int:
    from ..local import serve_forever

    def announce(url: str) -> None:
        print(url, flush=True)
        if not args.quiet:
            print(
                "local Kinesis, DynamoDB, S3 and Cognito on loopback (state is lost when "
                "it stops); Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )

    serve_forever(args.port, announce)
    return 0


def add_local(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "local",
        parents=[common],
        help="run a local Kinesis, DynamoDB and S3 endpoint in the foreground",
        description="Serve Kinesis, DynamoDB, S3 and Cognito (installed by "
        "pip install 'shardflow[local]') on 127.0.0.1 and print the endpoint URL on the "
        "first line of standard output. Everything is kept in memory until it stops.",
        epilog="example: shardflow local --port 4567, then in another shell: "
        "shardflow --endpoint-url http://127.0.0.1:4567 put logs --create 1",
    )
    p.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    p.add_argument("--quiet", action="store_true", help="print only the URL")
    p.set_defaults(handler=_cmd_local)


def _cmd_proxy(args: argparse.Namespace) -> int:
    from collections.abc import Mapping

    from ..testing import FaultProxy, serve_forever

    def announce(url: str) -> None:
        print(url, flush=True)
        if not args.quiet:
            print(
                f"fault proxy on loopback in front of {args.upstream}; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )

    def summary(counts: Mapping[str, int]) -> None:
        if not args.quiet:
            happened = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
            print(f"fault proxy stopped: {happened or 'no requests'}", file=sys.stderr)

    ops = {op.strip() for op in (args.operations or "").split(",") if op.strip()} or None
    try:
        proxy = FaultProxy(
            args.upstream,
            port=args.port,
            seed=args.seed,
            throttle_fraction=args.throttle,
            internal_failure_fraction=args.internal_failure,
            error_5xx_fraction=args.error_5xx,
            reset_before_fraction=args.reset_before,
            reset_after_fraction=args.reset_after,
            latency=args.latency,
            enforce_write_limits=args.write_limits,
            enforce_read_limits=args.read_limits,
            expire_iterator_fraction=args.expire_iterators,
            read_throttle_fraction=args.read_throttle,
            operations=ops,
            subscription_in_use_fraction=args.subscription_in_use,
            subscription_limit_fraction=args.subscription_limit,
            cut_subscription_after=args.cut_subscriptions_after,
            fail_subscription_after=args.fail_subscriptions_after,
        )
    except (TypeError, ValueError) as exc:
        return usage("proxy", str(exc))
    serve_forever(proxy, announce, summary)
    return 0


def add_proxy(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "proxy",
        parents=[common],
        help="run a fault-injecting proxy in front of a Kinesis endpoint",
        description="Serve a proxy on 127.0.0.1 in front of a Kinesis endpoint (such as the "
        "one shardflow local runs) that injects the faults real Kinesis produces: throttled and "
        "failed PutRecords entries, 5xx answers, connection resets, latency, expired "
        "iterators and read throttling. Prints its URL on the first line of standard "
        "output and runs until Ctrl-C. F is a fraction (probability) between 0 and 1.",
        epilog="example: shardflow proxy --upstream http://127.0.0.1:4567 --seed 7 "
        "--throttle 0.1 --5xx 0.02 --reset-after 0.01",
    )
    p.add_argument("--upstream", required=True, metavar="URL", help="the endpoint to proxy")
    p.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    p.add_argument("--seed", type=int, default=None, help="seed making the faults repeatable")
    p.add_argument("--quiet", action="store_true", help="print only the URL")
    writes = p.add_argument_group("writes (per PutRecords entry; a PutRecord call as a whole)")
    requests = p.add_argument_group(
        "requests (PutRecord, PutRecords and GetRecords unless --operations says otherwise)"
    )
    reads = p.add_argument_group("reads (per GetRecords call)")
    fractions = (
        (writes, "--throttle", "throttle", "ProvisionedThroughputExceededException (not written)"),
        (writes, "--internal-failure", "internal_failure", "InternalFailure (not written)"),
        (requests, "--5xx", "error_5xx", "500 InternalFailure or 503 ServiceUnavailable"),
        (requests, "--reset-before", "reset_before", "connection reset, request not forwarded"),
        (requests, "--reset-after", "reset_after", "forwarded and applied, then connection reset"),
        (reads, "--expire-iterators", "expire_iterators", "ExpiredIteratorException"),
        (reads, "--read-throttle", "read_throttle", "ProvisionedThroughputExceededException"),
    )
    for group, flag, dest, what in fractions:
        group.add_argument(flag, dest=dest, type=float, default=0.0, metavar="F", help=what)
    writes.add_argument(
        "--write-limits", action="store_true", help="enforce 1000 records/s and 1 MiB/s per shard"
    )
    requests.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="seconds added per request"
    )
    requests.add_argument(
        "--operations",
        metavar="OPS",
        help="comma-separated operations the request faults apply to ('*': every one)",
    )
    reads.add_argument(
        "--read-limits", action="store_true", help="enforce 5 calls/s and 2 MiB/s per shard"
    )
    subs = p.add_argument_group("enhanced fan-out (per SubscribeToShard call or stream)")
    subs.add_argument("--subscription-in-use", type=float, default=0.0, metavar="F",
                      help="ResourceInUseException (not forwarded)")
    subs.add_argument("--subscription-limit", type=float, default=0.0, metavar="F",
                      help="LimitExceededException (not forwarded)")
    subs.add_argument("--cut-subscriptions-after", type=int, default=None, metavar="N",
                      help="reset each subscription's connection after N events")
    subs.add_argument("--fail-subscriptions-after", type=int, default=None, metavar="N",
                      help="end each subscription after N events with InternalFailure")
    p.set_defaults(handler=_cmd_proxy)
