"""Run one consumer contender in this process and print its figures as one JSON line.

    python -m benchmarks.contenders.readers NAME --url URL --stream S --records N [--aggregated]

Exit status: 0 ran, 3 unavailable here, 1 failed (the JSON says why).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
import traceback
from typing import Any

from ...common import dumps_line
from . import ReadContext, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contenders.readers")
    parser.add_argument("name")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--aggregated", action="store_true")
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
    ctx = ReadContext(args.url, args.stream, args.records, args.aggregated)
    try:
        if inspect.iscoroutinefunction(module.run):
            asyncio.run(module.run(ctx))
        else:
            module.run(ctx)
        measured = ctx.timer.result
        if measured is None:
            raise RuntimeError("the contender did not time a region")
        if ctx.seen != args.records:
            raise RuntimeError(f"read {ctx.seen} records, expected {args.records}")
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        print(dumps_line({**result, "status": "failed",
                          "reason": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(dumps_line({**result, "status": "ok", **measured.as_dict(),
                      "records_per_s": measured.per_second(ctx.seen),
                      "cpu_us_per_record": measured.cpu_us_per(ctx.seen)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
