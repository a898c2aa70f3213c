"""The ``shardflow`` command line: ``shardflow <command> --help`` describes each command.

Exit status: 0 success, 1 failure (stream not found, records not delivered, events lost,
AWS refused), 2 usage error, 130 interrupted (Ctrl-C). Expected errors print one line
starting with ``shardflow <command>:``; ``--debug`` adds tracebacks and debug logging.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ._tools import add_bench, add_local, add_proxy, flags_named, usage

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

log = logging.getLogger("shardflow.cli")

_EPILOG = """\
examples:
  shardflow demo                              the whole pipeline on a local endpoint
  shardflow local                             serve Kinesis, DynamoDB, S3 locally; prints URL
  shardflow --endpoint-url URL put logs --create 2 < events.ndjson
  shardflow --endpoint-url URL tail logs --from trim --limit 10 --json pretty
  shardflow bench --suite compare             the benchmarks (in a clone of the repository)

AWS credentials and region come from the usual places (environment, ~/.aws, instance
roles); --region and --endpoint-url override them. Global options may also follow the
command. Exit status: 0 ok, 1 failure, 2 usage error, 130 interrupted.
"""


class _Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs to the terminal; keeps example blocks (indented lines) as
    they are."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(block, width, indent))
        return "\n\n".join(paragraphs)


# --- shared options ------------------------------------------------------------------------


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before the command and after it (defaults are applied in main)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and diagnostics (any command)")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="Kinesis/S3/DynamoDB endpoint instead of AWS (e.g. the URL `shardflow local` "
        "prints)",
    )
    group.add_argument(
        "--region", metavar="NAME", default=argparse.SUPPRESS, help="AWS region (e.g. eu-west-1)"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging, and tracebacks for errors",
    )
    return common


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _stream(text: str) -> str:
    from .._core.aws import stream_params

    try:
        stream_params(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("stream must", "STREAM must")) from None
    return text


def _start(text: str) -> Any:
    from ._records import parse_start

    try:
        return parse_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- demo ----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoNotAllowed, DemoOptions, run_demo
    from ..demo._report import format_summary

    try:
        options = DemoOptions(
            events=args.events,
            shards=args.shards,
            users=args.users,
            endpoint_url=args.endpoint_url,
            use_aws=args.aws,
            region_name=args.region,
            create=args.create,
            keep=args.keep,
            progress=not args.quiet,
        )
    except ValueError as exc:
        return usage("demo", str(exc))
    try:
        if options.remote:
            summary = asyncio.run(run_demo(options, options.endpoint_url))
        else:
            from ..local import local_endpoint

            with local_endpoint() as url:
                summary = asyncio.run(run_demo(options, url))
    except DemoNotAllowed as exc:
        return usage("demo", str(exc))
    print(format_summary(summary), flush=True)
    return 0 if summary.ok else 1


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=_Formatter,
        help="run the whole pipeline end to end and count what arrived",
        description="Simulated app users post events through a collector (a spool on disk, "
        "records keyed by user_id and packed into KPL aggregates) into a new stream; a "
        "two-worker consumer group (sharing the shards through DynamoDB leases) archives "
        "them to S3 and counts events per type per minute. At the end the "
        "archive is read back from S3 and compared with what was posted: events posted, "
        "in S3, duplicates, lost (must be 0: exit status 1 otherwise), throughput and "
        "latency. Progress goes to standard error, the summary to standard output.",
        epilog="By default everything runs on a local endpoint in this process (installed "
        "by pip install 'shardflow[local]'): nothing to set up. With --endpoint-url or "
        "--aws the demo creates a stream, a bucket and a lease table only if --create is "
        "given, and deletes them at the end unless --keep is given.",
    )
    p.add_argument("--events", type=_positive_int, default=20_000, metavar="N",
                   help="events to post (default: 20,000)")
    p.add_argument("--shards", type=_positive_int, default=4, metavar="N",
                   help="shards of the stream (default: 4)")
    p.add_argument("--users", type=_positive_int, default=1_000, metavar="N",
                   help="simulated users posting concurrently (default: 1,000)")
    p.add_argument("--aws", action="store_true",
                   help="run against AWS itself (with --create; costs a little)")
    p.add_argument("--create", action="store_true",
                   help="allow creating the stream, bucket and table on --endpoint-url/--aws")
    p.add_argument("--keep", action="store_true",
                   help="keep what --create made (default: delete it at the end)")
    p.add_argument("--quiet", action="store_true", help="no progress display, just the summary")
    p.set_defaults(handler=_cmd_demo)


# --- put / tail ----------------------------------------------------------------------------


def _cmd_put(args: argparse.Namespace) -> int:
    from ._records import PutOptions, put_lines

    if args.file is None and sys.stdin.isatty() and not args.quiet:
        print("reading records from standard input, one per line; end with Ctrl-D",
              file=sys.stderr, flush=True)
    options = PutOptions(
        stream=args.stream,
        path=args.file,
        partition_key=args.partition_key,
        key=args.key,
        aggregate=args.aggregate,
        create_shards=args.create,
        endpoint_url=args.endpoint_url,
        region_name=args.region,
        quiet=args.quiet,
    )

    def report(line: str) -> None:
        print(f"shardflow put: {line}", file=sys.stderr, flush=True)

    return asyncio.run(put_lines(options, report))


def _add_put(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "put",
        parents=[common],
        formatter_class=_Formatter,
        help="put lines of standard input (or a file) into a stream, one record each",
        description="Put each non-empty line of standard input (or --file) into STREAM as "
        "one record (batched and retried). Reports the counts on standard error; exit "
        "status 1 if any record was not delivered (the failed lines are named). Ctrl-C "
        "stops reading and reports what was sent.",
        epilog="examples:\n"
        "  echo '{\"user_id\": \"u1\", \"page\": \"/\"}' | shardflow put logs "
        "--partition-key user_id\n"
        "  shardflow put logs --file events.ndjson --aggregate --create 4",
    )
    p.add_argument("stream", metavar="STREAM", type=_stream, help="stream name or ARN")
    p.add_argument("--file", "-f", metavar="PATH", help="read this file instead of stdin")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument(
        "--partition-key", "-k", metavar="FIELD",
        help="partition key from this JSON field of each line (dotted for nested: user.id)",
    )
    keys.add_argument("--key", metavar="KEY", help="one fixed partition key for every record")
    p.add_argument("--aggregate", action="store_true",
                   help="pack records into KPL aggregates (fewer, larger Kinesis records)")
    p.add_argument("--create", type=_positive_int, metavar="SHARDS",
                   help="create the stream with this many shards if it does not exist")
    p.add_argument("--quiet", "-q", action="store_true", help="print only failures")
    p.set_defaults(handler=_cmd_put)


def _cmd_tail(args: argparse.Namespace) -> int:
    from ._records import TailOptions, tail_stream

    options = TailOptions(
        stream=args.stream,
        start_at=args.start_at,
        limit=args.limit,
        json=args.json,
        idle_timeout=args.idle_timeout,
        endpoint_url=args.endpoint_url,
        region_name=args.region,
        fan_out=args.fan_out,
    )

    def report(line: str) -> None:
        print(f"shardflow tail: {line}", file=sys.stderr, flush=True)

    try:
        return asyncio.run(tail_stream(options, report))
    except BrokenPipeError:  # `shardflow tail ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _add_tail(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tail",
        parents=[common],
        formatter_class=_Formatter,
        help="print a stream's records as they arrive",
        description="Print the records of every shard of STREAM as they arrive (KPL "
        "aggregates are unpacked), in order within each shard, until --limit records, "
        "--idle-timeout, or Ctrl-C. By default only records put from now on are shown "
        "(--from latest); --from trim reads from the oldest record kept.",
        epilog="examples:\n"
        "  shardflow tail logs                          new records from now on\n"
        "  shardflow tail logs --from trim --limit 100  the oldest 100 records\n"
        "  shardflow tail logs --from 2024-05-01T12:00Z --json pretty",
    )
    p.add_argument("stream", metavar="STREAM", type=_stream, help="stream name or ARN")
    p.add_argument(
        "--from", dest="start_at", type=_start, default="LATEST", metavar="WHEN",
        help="trim (the oldest record kept), latest (default: only new records), or an "
        "ISO 8601 time (UTC unless it has an offset)",
    )
    p.add_argument("--limit", "-n", type=_positive_int, metavar="N", help="stop after N records")
    p.add_argument(
        "--json", nargs="?", const="compact", choices=("compact", "pretty"), metavar="STYLE",
        help="print each record as a JSON object with its shard, sequence number, partition "
        "key and arrival time; STYLE compact (one line, the default) or pretty. Without "
        "--json the data is printed as it is, one record per line",
    )
    p.add_argument("--idle-timeout", type=_seconds, metavar="S",
                   help="stop after S seconds without a new record")
    from ._consumers import TAIL_CONSUMER, consumer_name

    p.add_argument("--fan-out", nargs="?", const=TAIL_CONSUMER, type=consumer_name,
                   metavar="NAME", help="read through enhanced fan-out (SubscribeToShard) as "
                   f"stream consumer NAME (default {TAIL_CONSUMER}; registered on first use "
                   "and kept: `shardflow consumers STREAM --deregister NAME` removes it)")
    p.set_defaults(handler=_cmd_tail)


# --- the parser and main -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="shardflow",
        parents=[common],
        formatter_class=_Formatter,
        description="Stream logs and events through Amazon Kinesis: collector, producer, "
        "consumer, sinks. Run `shardflow COMMAND --help` for a command's options.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_demo(sub, common)
    _add_put(sub, common)
    _add_tail(sub, common)
    from ._status import add_status

    add_status(sub, common, _stream, _seconds)
    from ._consumers import add_consumers

    add_consumers(sub, common, _stream)
    add_local(sub, common)
    add_proxy(sub, common)
    add_bench(sub)
    return parser


def _configure_logging(debug: bool) -> None:
    if debug:
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
        )
        for noisy in ("botocore", "aiobotocore", "urllib3", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    else:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")


def _message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """A one-line explanation of an expected error, or None for a bug."""
    from .. import errors

    where = args.endpoint_url or "AWS"
    stream = getattr(args, "stream", None)
    if isinstance(exc, errors.StreamNotFound):
        hint = " (create it with --create SHARDS)" if args.command == "put" else ""
        found = exc.message if " in region " in exc.message else None
        return f"{found or f'stream {stream!r} not found at {where}'}{hint}"
    if isinstance(exc, errors.NoRegion):
        return "no AWS region configured: pass --region NAME or set AWS_REGION"
    if isinstance(exc, errors.ConfigurationError):
        return exc.message or str(exc)
    if isinstance(exc, errors.AccessDenied):
        return (f"access denied by {where}: {exc} (check the AWS credentials and region, "
                "e.g. AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    if isinstance(exc, errors.EndpointUnreachable | errors.RequestTimeout):
        return f"cannot reach {where}: {exc}"
    if isinstance(exc, errors.ShardflowError):
        return flags_named(str(exc))
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"port {args.port} is in use (pass another --port, or --port 0 for any free one)"
    return None


def _expected(exc: BaseException) -> BaseException:
    """``exc``, or the first error inside an exception group (anyio task groups)."""
    inner = getattr(exc, "exceptions", None)
    if inner and len(inner) >= 1:
        return _expected(inner[0])
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if args.command == "bench":
        args.passthrough = [a for a in extra if a != "--debug"]
        if len(args.passthrough) < len(extra):
            args.debug = True
    elif extra:
        parser.error(f"unrecognized arguments for {args.command}: {' '.join(extra)}")
    for name, default in (("endpoint_url", None), ("region", None), ("debug", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    from .._core.aws import check_endpoint

    try:
        check_endpoint(args.endpoint_url, args.region)
    except ValueError as exc:
        return usage(args.command, str(exc))
    _configure_logging(args.debug)
    try:
        return handler(args)
    except KeyboardInterrupt:
        if args.command == "demo":  # put reports what it sent itself
            print(f"shardflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = _expected(exc)
        message = _message(error, args)
        if message is None or args.debug:
            traceback.print_exception(exc)
        if message is None:
            print(f"shardflow {args.command}: unexpected error (a bug? please report it with "
                  "the traceback above)", file=sys.stderr)
            return 1
        print(f"shardflow {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
