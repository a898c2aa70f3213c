from __future__ import annotations

import builtins
import collections.abc
import inspect
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import shardflow
from shardflow import KinesisLimits, errors
from shardflow._core.aws import error_for_code, stream_name, stream_params


def test_all_matches_exports() -> None:
    for name in shardflow.__all__:
        assert hasattr(shardflow, name), name
    # Anything public that is not re-exported must be a submodule (imported as a side
    # effect of the re-exports), never a stray class or function.
    stray = {
        n
        for n, v in vars(shardflow).items()
        if not n.startswith("_")
        and n not in shardflow.__all__
        and n != "annotations"
        and not isinstance(v, types.ModuleType)
    }
    assert stray == set()


def test_import_loads_no_tooling_and_no_optional_dependency() -> None:
    """``import shardflow`` alone loads neither the tooling subpackages (testing, cli,
    demo) nor aiohttp's server, moto, werkzeug, OpenTelemetry or protobuf."""
    code = (
        "import sys, shardflow\n"
        "bad = ('shardflow.testing', 'shardflow.cli', 'shardflow.demo', 'aiohttp.web', "
        "'moto', 'werkzeug', 'flask', 'opentelemetry', 'google')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or "
        "any(m == b or m.startswith(b + '.') for b in bad)))\n"
        "shardflow.testing.FaultProxy\n"
        "print('shardflow.testing' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "True"]


# Names from the standard library and type variables that public signatures may use.
_NOT_OURS = (
    set(dir(builtins))
    | set(dir(typing))
    | set(dir(collections.abc))
    | {"AbstractAsyncContextManager", "Future", "Path", "PathLike", "TracebackType"}
    | {"A", "E", "K", "V"}  # type variables
)


def _annotation_names(obj: object) -> set[str]:
    names: set[str] = set()
    members: list[object] = [obj]
    if inspect.isclass(obj):
        members = [v for n, v in vars(obj).items() if not n.startswith("_") or n == "__init__"]
    for member in members:
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if isinstance(member, property):
            member = member.fget
        for annotation in getattr(member, "__annotations__", {}).values():
            for word in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", str(annotation)):
                last = word.rsplit(".", 1)[-1]
                if last[:1].isupper():
                    names.add(last)
    return names


def test_every_type_in_a_public_signature_is_exported() -> None:
    """A user can name every type they pass or get back (anyio's rule)."""
    missing: dict[str, set[str]] = {}
    for name in shardflow.__all__:
        if name in ("testing", "errors"):
            continue
        for used in _annotation_names(getattr(shardflow, name)):
            exported = used in shardflow.__all__ or used in errors.__all__
            if not exported and used not in _NOT_OURS:
                missing.setdefault(used, set()).add(name)
    # ShardReader objects are made by the consumer; their constructor, and the methods its
    # fetch sources call (position()), and take() (the consumer's buffered rows) are not
    # for users.
    missing.pop("ReadContext", None)
    missing.pop("StartPosition", None)
    missing.pop("Row", None)
    assert missing == {}


def test_every_error_derives_from_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ShardflowError), name


def test_input_errors_are_builtin_errors_too() -> None:
    assert issubclass(errors.InvalidPartitionKey, ValueError)
    assert issubclass(errors.RecordTooLarge, ValueError)
    assert issubclass(errors.InvalidHashKey, ValueError)
    assert issubclass(errors.SerializationError, TypeError)


@pytest.mark.parametrize(
    ("code", "cls", "retriable"),
    [
        ("ProvisionedThroughputExceededException", errors.ThroughputExceeded, True),
        ("InternalFailure", errors.InternalFailure, True),
        ("ServiceUnavailable", errors.ServiceUnavailable, True),
        ("ResourceNotFoundException", errors.StreamNotFound, False),
        ("AccessDeniedException", errors.AccessDenied, False),
        ("KMSDisabledException", errors.KMSError, False),
        ("KMSThrottlingException", errors.ThroughputExceeded, True),
        ("ValidationException", errors.InvalidArgument, False),
        ("ExpiredIteratorException", errors.ExpiredIterator, True),
        ("ExpiredTokenException", errors.CredentialsExpired, True),
        ("SomethingNew", errors.AWSError, False),
    ],
)
def test_error_codes_map_to_situations(
    code: str, cls: type[errors.AWSError], retriable: bool
) -> None:
    err = error_for_code(code, "msg", "PutRecords")
    assert type(err) is cls
    assert err.retriable is retriable
    assert err.code == code


def test_unknown_5xx_is_retriable() -> None:
    assert error_for_code("Weird", status=503).retriable
    assert not error_for_code("Weird", status=400).retriable


def test_resource_not_found_outside_kinesis_is_not_a_stream() -> None:
    err = error_for_code("ResourceNotFoundException", service="dynamodb")
    assert type(err) is errors.ResourceNotFound


def test_stream_arn_and_name() -> None:
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/logs"
    assert stream_params(arn) == {"StreamARN": arn}
    assert stream_params("logs") == {"StreamName": "logs"}
    assert stream_name(arn) == "logs"
    with pytest.raises(ValueError, match="ARN"):
        stream_params("arn:aws:s3:::bucket")
    with pytest.raises(ValueError, match="non-empty"):
        stream_params("")


def test_limits_validate() -> None:
    assert KinesisLimits().max_batch_records == 500
    assert KinesisLimits(max_record_bytes=10 * 1024 * 1024).max_record_bytes == 10485760
    with pytest.raises(ValueError, match="max_batch_records"):
        KinesisLimits(max_batch_records=501)
    with pytest.raises(ValueError, match="max_record_bytes"):
        KinesisLimits(max_record_bytes=0)


def test_the_module_map_names_every_module() -> None:
    """docs/architecture.md's module map is the folder tree: a module added without its
    line there fails here."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = doc.split("## Module map", 1)[1].split("```")[1]
    root = Path(shardflow.__file__).parent
    missing = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if path.name != "__init__.py"
        and not re.search(rf"(?<![\w.]){re.escape(path.name)}(?!\w)", block)
    ]
    assert missing == []
