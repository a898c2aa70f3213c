"""Helpers every benchmark uses: the workload, timed regions, tables, JSON results, the machine.

A benchmark builds its workload with :func:`make_events` before the clock starts, measures
the hot part with :class:`Timer` (wall time, this process's user+system CPU, peak RSS),
prints a table with :func:`markdown_table` and writes ``benchmarks/results/<name>.json``
with :func:`write_results` (the machine and package versions are added).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import platform
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

__all__ = [
    "RESULTS_DIR",
    "Event",
    "Measurement",
    "Timer",
    "add_common_arguments",
    "bench_env",
    "dumps_line",
    "fmt_bytes",
    "fmt_float",
    "fmt_int",
    "machine_info",
    "make_events",
    "markdown_table",
    "peak_rss_bytes",
    "rss_bytes",
    "run_timed",
    "write_results",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

PACKAGES = (
    "shardflow",
    "aiobotocore",
    "botocore",
    "boto3",
    "aiohttp",
    "orjson",
    "anyio",
    "async-kinesis",
    "aiokpl",
    "moto",
)
"""Package versions recorded with every result (those that are installed)."""


# --- workload -------------------------------------------------------------------------

_PATHS = ("/", "/search", "/cart", "/checkout", "/products/{}", "/category/{}", "/help")
_AGENTS = ("ios/17.4", "android/14", "web/chrome-124", "web/firefox-126", "web/safari-17")


Event = tuple[str, dict[str, Any]]
"""(partition key, JSON-serialisable event)."""


def make_events(count: int, *, users: int = 1000, seed: int = 8) -> list[Event]:
    """``count`` (partition_key, event) pairs: JSON-serialisable click events of ~200 bytes.

    Deterministic for a given (count, users, seed). The partition key is the event's
    ``user_id``, one of ``users`` ids. Build this before the clock starts.
    """
    if count < 0 or users < 1:
        raise ValueError(f"need count >= 0 and users >= 1, got count={count}, users={users}")
    rng = random.Random(seed)
    user_ids = [f"user-{i:05d}" for i in range(users)]
    out: list[Event] = []
    t0 = 1_700_000_000.0
    for i in range(count):
        user = user_ids[rng.randrange(users)]
        path = rng.choice(_PATHS).format(rng.randrange(10_000))
        event = {
            "event_id": f"{rng.getrandbits(128):032x}",
            "tag": "app.click",
            "time": round(t0 + i * 0.001, 3),
            "user_id": user,
            "session": f"{rng.getrandbits(64):016x}",
            "path": path,
            "agent": rng.choice(_AGENTS),
            "item": rng.randrange(1_000_000),
            "price_cents": rng.randrange(100, 100_000),
        }
        out.append((user, event))
    return out


# --- measuring --------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes() -> int | None:
    """This process's resident set size now, in bytes (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed region: wall seconds, this process's CPU seconds, and memory.

    ``peak_rss_bytes`` is the process's peak so far (start-up included);
    ``rss_start_bytes`` the RSS when the region began and ``region_peak_rss_bytes`` the
    highest RSS sampled during it (every 10 ms; None where /proc is missing).
    """

    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    rss_start_bytes: int | None = None
    region_peak_rss_bytes: int | None = None

    def per_second(self, count: int) -> float:
        return count / self.seconds if self.seconds > 0 else float("inf")

    def cpu_us_per(self, count: int) -> float:
        return self.cpu_seconds * 1e6 / count if count else 0.0

    @property
    def rss_growth_bytes(self) -> int | None:
        """How much the RSS grew during the region, at its highest."""
        if self.rss_start_bytes is None or self.region_peak_rss_bytes is None:
            return None
        return max(0, self.region_peak_rss_bytes - self.rss_start_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth_bytes": self.rss_growth_bytes}


class _RSSSampler:
    """Samples this process's RSS every ``interval`` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_bytes()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now

    def start(self) -> None:
        if self.peak is not None:  # no /proc: nothing to sample
            self._thread.start()

    def stop(self) -> int | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        now = rss_bytes()
        if now is not None and (self.peak is None or now > self.peak):
            self.peak = now
        return self.peak


class Timer:
    """Measure a region: ``with Timer() as t: ...`` then ``t.result``.

    Collects garbage before the clock starts so earlier allocations do not bill the
    region. CPU is ``getrusage(RUSAGE_SELF)`` user+system: every thread of this process
    (the RSS sampler's wake-ups every 10 ms included; ``sample_rss=False`` turns it off).
    Works as a sync and as an async context manager; enter it once.
    """

    __slots__ = ("_cpu0", "_rss0", "_sampler", "_t0", "result", "sample_rss")

    def __init__(self, *, sample_rss: bool = True) -> None:
        self.sample_rss = sample_rss
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._rss0: int | None = None
        self._sampler: _RSSSampler | None = None
        self.result: Measurement | None = None

    def __enter__(self) -> Timer:
        if self._t0:
            raise RuntimeError("a Timer measures one region; create another")
        gc.collect()
        self._rss0 = rss_bytes()
        if self.sample_rss:
            self._sampler = _RSSSampler()
            self._sampler.start()
        self._cpu0 = _cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._t0
        cpu = _cpu_seconds() - self._cpu0
        region_peak = self._sampler.stop() if self._sampler is not None else None
        self.result = Measurement(seconds, cpu, peak_rss_bytes(), self._rss0, region_peak)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def run_timed(run: Callable[[Any], Any], ctx: Any) -> Measurement:
    """Call a contender's ``run(ctx)`` (a coroutine function in a new event loop) and
    return the region it timed with ``ctx.timer``; RuntimeError when it timed none."""
    if inspect.iscoroutinefunction(run):
        asyncio.run(run(ctx))
    else:
        run(ctx)
    measured: Measurement | None = ctx.timer.result
    if measured is None:
        raise RuntimeError("the contender did not time a region (ctx.timer)")
    return measured


# --- environment -------------------------------------------------------------------------

_AWS_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
)


def bench_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a benchmark subprocess talking to a LOCAL endpoint.

    Dummy credentials, a fixed region, no profile or config file, no metadata service:
    a benchmark never signs with, or looks up, real credentials.
    """
    env = dict(os.environ if base is None else base)
    for name in _AWS_DROP:
        env.pop(name, None)
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    src = str(ROOT / "src")
    paths = [str(ROOT), src]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU count and model, OS, Python, and the versions of the installed packages."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": versions,
    }


# --- command lines ---------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser, *, records: int = 100_000) -> None:
    """The options every benchmark suite accepts (``python -m benchmarks`` forwards them):
    ``--records N``, ``--endpoint fake|moto|both`` and ``--out DIR``."""
    parser.add_argument("--records", type=int, default=records,
                        help=f"events per run (default {records:,})")
    parser.add_argument("--endpoint", choices=("fake", "moto", "both"), default="both",
                        help="the fast fake Kinesis, moto, or both (default both)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for the JSON, Markdown and PNG results "
                             "(default benchmarks/results)")


# --- output ----------------------------------------------------------------------------


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{round(value):,}"


def fmt_float(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str | None = None
) -> str:
    """A GitHub Markdown table. ``align`` holds one of ``l``/``r`` per column (default:
    first column left, the others right). Cells are str()-ed; pipes are escaped."""
    cols = len(headers)
    align = align or "l" + "r" * (cols - 1)
    if len(align) != cols:
        raise ValueError(f"align has {len(align)} letters for {cols} columns")
    body = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    for row in body:
        if len(row) != cols:
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {cols}")
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1)
        for w, a in zip(widths, align, strict=True)
    ) + "|"
    return "\n".join([line(list(headers)), rule, *(line(r) for r in body)])


def write_results(name: str, payload: Mapping[str, Any], *, directory: Path | None = None) -> Path:
    """Write ``payload`` plus ``machine`` and ``written_at`` to ``<results>/<name>.json``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad result name {name!r}")
    folder = directory or RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        **payload,
    }
    path = folder / f"{name}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def dumps_line(obj: Any) -> str:
    """One JSON line (how contender processes report to the runner)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
