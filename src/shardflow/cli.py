"""The ``shardflow`` command line: ``shardflow <command> --help`` describes each command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _cmd_local(args: argparse.Namespace) -> int:
    from .local import serve_forever

    def announce(url: str) -> None:
        print(url, flush=True)
        if not args.quiet:
            print(
                "moto server (Kinesis, DynamoDB, S3, Cognito) on loopback, single-threaded; "
                "Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )

    serve_forever(args.port, announce)
    return 0


def _add_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "local",
        help="run the embedded local endpoint (moto) in the foreground",
        description="Serve Kinesis, DynamoDB, S3 and Cognito (moto) on 127.0.0.1 and print "
        "the endpoint URL on the first line of standard output.",
    )
    p.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    p.add_argument("--quiet", action="store_true", help="print only the URL")
    p.set_defaults(handler=_cmd_local)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardflow",
        description="Stream logs and events through Amazon Kinesis.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_local(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
