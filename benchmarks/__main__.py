"""``python -m benchmarks``: every benchmark suite, one after another.

    python -m benchmarks [--suite NAME ...] [--records N] [--endpoint fake|moto|both]
                         [--out DIR] [--only CONTENDER ...]

Suites are modules with ``main(argv) -> int`` that accept the common options of
:func:`benchmarks.common.add_common_arguments` (``--records``, ``--endpoint``, ``--out``).
Only the options given here are forwarded, so each suite keeps its own defaults.
``--only`` goes to the side-by-side comparison alone. A suite whose module does not exist
yet is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

SUITES: dict[str, tuple[str, str]] = {
    # name: (module, what it measures)
    "compare": ("benchmarks.compare",
                "every producer library side by side on one workload (issue 8)"),
    # The suites below belong to the producer, consumer, aggregation and collector work;
    # each is picked up as soon as its module exists. Add a suite here: one line.
    "producer": ("benchmarks.producer",
                 "shardflow's Producer: records/s, CPU µs/record, memory when stalled"),
    "consumer": ("benchmarks.consumer",
                 "shardflow's Consumer: read + deaggregate, put-to-delivery latency"),
    "aggregation": ("benchmarks.aggregation",
                    "the KPL aggregation codec: encode / decode cost per record"),
    "collector": ("benchmarks.collector",
                  "the Collector's post path, in memory and with a SQLite spool"),
    "sinks": ("benchmarks.sinks", "S3Sink encode/gzip/upload, tumbling windows"),
    "lambda_events": ("benchmarks.lambda_events",
                      "lambda_records: a Lambda Kinesis event into Records, per record"),
    "metrics": ("benchmarks.metrics",
                "OpenTelemetry metrics off / API only / SDK: CPU added per record"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmark suites: "
        + "; ".join(f"{name}: {what}" for name, (_, what) in SUITES.items()),
    )
    parser.add_argument("--suite", action="append", choices=list(SUITES), default=[],
                        help="run only this suite (repeatable; default: every suite)")
    parser.add_argument("--records", type=int, help="events per run (each suite's default)")
    parser.add_argument("--endpoint", choices=("fake", "moto", "both"),
                        help="endpoint(s) to run against (each suite's default)")
    parser.add_argument("--out", help="results folder (default benchmarks/results)")
    parser.add_argument("--only", action="append", default=[], metavar="CONTENDER",
                        help="compare: run only this contender (repeatable)")
    args = parser.parse_args(argv)

    common: list[str] = []
    for option in ("records", "endpoint", "out"):
        value = getattr(args, option)
        if value is not None:
            common += [f"--{option}", str(value)]
    status = 0
    for name in args.suite or list(SUITES):
        module_path, _ = SUITES[name]
        if importlib.util.find_spec(module_path) is None:
            print(f"== {name}: skipped ({module_path} does not exist yet)", file=sys.stderr)
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        suite_argv = list(common)
        if name == "compare":
            for contender in args.only:
                suite_argv += ["--only", contender]
        code = importlib.import_module(module_path).main(suite_argv)
        status = status or int(code or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
