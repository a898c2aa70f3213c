"""README.md and the documentation site stay true: every Python block of README runs as
shown (imports included) on the local endpoint, the Configuration page's option tables
give the code's defaults, and the bad-input table is the one the reliability suite
checks (on the site only)."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shardflow import (
    BufferedOutput,
    Consumer,
    DynamoDBLeases,
    KinesisLimits,
    Producer,
    S3Sink,
)
from shardflow.testing import FaultProxy

from support import ROOT

MiB = 1024 * 1024


# Blocks that cannot run here, each with the reason (by the README section holding them).
NEEDS_AWS = {
    "Pointing it at AWS": "CognitoCredentials needs a real Amazon Cognito identity pool",
}


def readme_python_blocks() -> list[tuple[str, str]]:
    """(heading of the section holding it, code) for every ```python block of README.md,
    including blocks indented inside a list."""
    text = (ROOT / "README.md").read_text()
    blocks: list[tuple[str, str]] = []
    heading = ""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip() == "```python":
            indent = line[: len(line) - len(line.lstrip())]
            code = []
            for inner in lines:
                if inner.strip() == "```" and inner.startswith(indent):
                    break
                code.append(inner[len(indent):])
            blocks.append((heading, textwrap.dedent("\n".join(code)) + "\n"))
    return blocks


def _block_id(block: tuple[str, str]) -> str:
    return block[0]


RUNNABLE = [block for block in readme_python_blocks() if block[0] not in NEEDS_AWS]


def test_every_readme_block_is_run_or_skipped_for_a_reason() -> None:
    blocks = readme_python_blocks()
    assert len(blocks) >= 7, "README python blocks went missing"
    skipped = [heading for heading, _ in blocks if heading in NEEDS_AWS]
    assert sorted(set(skipped)) == sorted(NEEDS_AWS), "a NEEDS_AWS entry matches no block"
    assert len(skipped) <= 2


@pytest.mark.parametrize("block", RUNNABLE, ids=[_block_id(b) for b in RUNNABLE])
def test_readme_block_runs_as_shown(block: tuple[str, str], tmp_path: Path) -> None:
    """Each block is a whole program (imports included) that runs on the local endpoint
    as a user would run it: ``python file.py``, or pytest for a block of tests."""
    heading, code = block
    script = tmp_path / ("test_readme.py" if "import pytest" in code else "readme.py")
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
        if "import pytest" in code
        else [sys.executable, str(script)]
    )
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"README block in {heading!r}:\n{proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr


def test_readme_python_blocks_parse() -> None:
    for _, code in readme_python_blocks():
        compile(code, "README.md", "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)


def test_the_bad_input_table_is_in_the_docs_only() -> None:
    """The table tests/reliability/test_bad_input_table.py checks is on the documentation
    site (docs/reliability.md, in the site's navigation); README points to it and holds no
    copy that could drift."""
    start = "<!-- bad-input-table:start -->"
    assert (ROOT / "docs" / "reliability.md").read_text().count(start) == 1
    assert "reliability.md" in (ROOT / "mkdocs.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert start not in readme
    assert "docs/reliability.md" in readme


DOCUMENTED = {
    "Producer(stream, ...)": Producer,
    "Consumer(stream, ...)": Consumer,
    "DynamoDBLeases(table, ...)": DynamoDBLeases,
    "BufferedOutput(output, ...)": BufferedOutput,
    "S3Sink(bucket, ...)": S3Sink,
    "FaultProxy(upstream_url, ...)": FaultProxy,
}


def option_rows() -> list[tuple[str, str, str]]:
    """(heading, option name, default as written) for every row of the option tables of
    the documentation site's Configuration page."""
    section = (ROOT / "docs" / "configuration.md").read_text()
    rows: list[tuple[str, str, str]] = []
    heading = ""
    for line in section.splitlines():
        if line.startswith("## "):
            heading = re.findall(r"`([^`]+)`", line)[0]
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        defaults = cells[1].split(", ") if len(names) > 1 else [cells[1]]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)  # one default for all of them
        rows.extend((heading, name, default) for name, default in zip(names, defaults, strict=True))
    return rows


_UNPARSED = object()


def parse_default(text: str) -> Any:
    words = {"None": None, "True": True, "False": False}
    if text in words:
        return words[text]
    if text == "`KinesisLimits()`":
        return KinesisLimits()
    quoted = re.fullmatch(r'`"(.*)"`', text)
    if quoted:
        return quoted.group(1)
    mib = re.fullmatch(r"(\d+) MiB", text)
    if mib:
        return int(mib.group(1)) * MiB
    if re.fullmatch(r"\d[\d,]*", text):
        return int(text.replace(",", ""))
    if re.fullmatch(r"\d+\.\d+", text):
        return float(text)
    return _UNPARSED


def test_readme_option_tables_give_the_code_defaults() -> None:
    rows = option_rows()
    checked = 0
    for heading, name, written in rows:
        cls = DOCUMENTED.get(heading)
        assert cls is not None, f"docs document {heading}: add it to DOCUMENTED"
        parameters = inspect.signature(cls).parameters
        assert name in parameters, f"docs/configuration.md: {heading} has no option {name!r}"
        expected = parse_default(written)
        if expected is _UNPARSED:
            continue
        actual = parameters[name].default
        if isinstance(expected, KinesisLimits) and actual is None:
            actual = KinesisLimits()  # None means the default limits
        assert actual == expected, f"docs: {heading} {name} default {written}, code {actual!r}"
        assert type(actual) is type(expected) or actual is None, (heading, name, written)
        checked += 1
    assert checked >= 50, f"only {checked} defaults could be checked"


@pytest.mark.parametrize(
    ("written", "value"),
    [("10,000", 10_000), ("64 MiB", 64 * MiB), ("0.1", 0.1), ('`"gzip"`', "gzip"),
     ("None", None), ("host name", _UNPARSED)],
)
def test_parse_default(written: str, value: Any) -> None:
    assert parse_default(written) == value or parse_default(written) is value
