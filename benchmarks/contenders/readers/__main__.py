"""Run one consumer contender in this process and print its figures as one JSON line.

    python -m benchmarks.contenders.readers NAME --url URL --stream S --records N [--aggregated]
        [--rounds R]

The figures are the first read's (a fresh process: its memory is touched for the first
time); with ``--rounds 2`` or more, ``steady_cpu_us_per_record`` is the last read's, from
TRIM_HORIZON again in the same process (what a long-running reader pays).

Exit status: 0 ran, 3 unavailable here, 1 failed (the JSON says why).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from ...common import dumps_line, run_timed
from . import ReadContext, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contenders.readers")
    parser.add_argument("name")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--aggregated", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="reads of the whole stream in this process (default 1)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"name": args.name, "records": args.records,
                              "aggregated": args.aggregated}
    module = load(args.name)
    check = getattr(module, "unavailable", None)
    reason = check() if check is not None else None
    if reason:
        print(dumps_line({**result, "status": "unavailable", "reason": reason}), flush=True)
        return 3
    result["description"] = module.DESCRIPTION
    rounds = []
    try:
        for _ in range(max(1, args.rounds)):
            ctx = ReadContext(args.url, args.stream, args.records, args.aggregated)
            measured = run_timed(module.run, ctx)
            if ctx.seen != args.records:
                raise RuntimeError(f"read {ctx.seen} records, expected {args.records}")
            rounds.append(measured)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        print(dumps_line({**result, "status": "failed",
                          "reason": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    first, last = rounds[0], rounds[-1]
    steady = {"steady_cpu_us_per_record": last.cpu_us_per(args.records)} if len(rounds) > 1 else {}
    print(dumps_line({**result, "status": "ok", **first.as_dict(),
                      "records_per_s": first.per_second(args.records),
                      "cpu_us_per_record": first.cpu_us_per(args.records), **steady}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
