"""README.md stays true: its quick starts are the tested examples, its option tables give
the code's defaults, and its bad-input table is the one the reliability suite checks."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
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


def readme_python_blocks() -> list[tuple[str | None, str]]:
    """(example it is taken from, or None; code) for every ```python block of README.md."""
    text = (ROOT / "README.md").read_text()
    blocks = re.finditer(
        r"(?:<!-- from (examples/\S+) -->\n)?( *)```python\n(.*?)\n\2```", text, re.DOTALL
    )
    return [
        (m.group(1), textwrap.dedent("\n".join(line[len(m.group(2)):]
                                               for line in m.group(3).splitlines())))
        for m in blocks
    ]


def test_readme_quick_starts_are_the_tested_examples() -> None:
    blocks = readme_python_blocks()
    excerpts = [(source, code) for source, code in blocks if source is not None]
    assert len(excerpts) >= 4, "README quick starts lost their <!-- from ... --> markers"
    for source, code in excerpts:
        assert source is not None
        example = textwrap.dedent((ROOT / source).read_text())
        lines = code.splitlines()
        found = False
        for indent in range(0, 17, 4):
            shifted = "\n".join((" " * indent + line) if line else "" for line in lines)
            if shifted in example:
                found = True
        assert found, f"README block is not a verbatim excerpt of {source}:\n{code}"


def test_readme_python_blocks_parse() -> None:
    for _, code in readme_python_blocks():
        compile(code, "README.md", "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)


def test_readme_bad_input_table_is_the_checked_one() -> None:
    """README shows the table that tests/reliability/test_bad_input_table.py checks."""
    start, end = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"

    def table(path: str) -> str:
        text = (ROOT / path).read_text()
        assert text.count(start) == 1, f"{path}: one {start} marker expected"
        return text[text.index(start) : text.index(end)]

    assert table("README.md") == table("docs/reliability.md")


DOCUMENTED = {
    "Producer(stream, ...)": Producer,
    "Consumer(stream, ...)": Consumer,
    "DynamoDBLeases(table, ...)": DynamoDBLeases,
    "BufferedOutput(output, ...)": BufferedOutput,
    "S3Sink(bucket, ...)": S3Sink,
    "FaultProxy(upstream_url, ...)": FaultProxy,
}


def option_rows() -> list[tuple[str, str, str]]:
    """(heading, option name, default as written) for every row of the option tables."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") : text.index("## Pointing it at AWS")]
    rows: list[tuple[str, str, str]] = []
    heading = ""
    for line in section.splitlines():
        if line.startswith("### "):
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
        assert cls is not None, f"README documents {heading}: add it to DOCUMENTED"
        parameters = inspect.signature(cls).parameters
        assert name in parameters, f"README: {heading} has no option {name!r}"
        expected = parse_default(written)
        if expected is _UNPARSED:
            continue
        actual = parameters[name].default
        if isinstance(expected, KinesisLimits) and actual is None:
            actual = KinesisLimits()  # None means the default limits
        assert actual == expected, f"README: {heading} {name} default {written}, code {actual!r}"
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
