"""Run one contender in this process and print its figures as one JSON line.

    python -m benchmarks.contenders NAME --url URL --stream STREAM [--records N]

Exit status: 0 ran, 3 unavailable here (the JSON says why), 1 failed (the JSON has the
error). The figures are this process's: wall time and user+system CPU over the timed
region, peak RSS and the RSS before the timed region.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from ..common import dumps_line, make_events, rss_bytes, run_timed
from . import RunContext, load, qualified


def _emit(result: dict[str, Any]) -> None:
    print(dumps_line(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contenders")
    parser.add_argument("name")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"name": args.name, "records": args.records}
    try:
        module = load(args.name)
    except ModuleNotFoundError as exc:
        if exc.name != qualified(args.name):
            raise
        _emit({**result, "status": "unavailable", "reason": "not written yet"})
        return 3
    check = getattr(module, "unavailable", None)
    reason = check() if check is not None else None
    if reason:
        _emit({**result, "status": "unavailable", "reason": reason})
        return 3
    result["description"] = module.DESCRIPTION
    result["aggregates"] = bool(getattr(module, "AGGREGATES", False))
    ctx = RunContext(url=args.url, stream=args.stream, in_flight=args.in_flight,
                     events=make_events(args.records, users=args.users))
    result["rss_before_bytes"] = rss_bytes()
    try:
        measured = run_timed(module.run, ctx)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _emit({**result, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    _emit({
        **result,
        "status": "ok",
        "extra_records": ctx.extra_records,
        **measured.as_dict(),
        "records_per_s": measured.per_second(args.records),
        "cpu_us_per_record": measured.cpu_us_per(args.records),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
