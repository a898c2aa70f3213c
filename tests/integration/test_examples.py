"""Each example in examples/ runs end to end on the embedded endpoint and shows its result.

(collector_quickstart.py and consumer_group.py have their own tests:
test_collector_quickstart.py and test_leases_example.py.)
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap

from support import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_run_by_a_test() -> None:
    tested_elsewhere = {"collector_quickstart.py", "consumer_group.py"}
    here = {"producer_quickstart.py", "consumer_quickstart.py", "archive_to_s3.py",
            "web_service.py"}
    examples = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert examples == here | tested_elsewhere


def test_producer_quickstart() -> None:
    out = run_example("producer_quickstart.py")
    assert re.search(r"put_and_wait: shard shardId-\d+, sequence \d+, 1 attempt", out), out
    assert "refused at put(): partition_key must have 1 to 256 characters, got 0" in out
    delivered = re.search(r"delivered (\d+) records: (.+)", out)
    assert delivered is not None, out
    assert int(delivered.group(1)) == 100
    per_shard = [int(n) for n in re.findall(r"shardId-\d+ (\d+)", delivered.group(2))]
    assert len(per_shard) == 2
    assert sum(per_shard) == 100
    assert "101 delivered, 0 failed" in out
    assert re.search(r"aggregate=True: \d+ of 1000 records went in KPL aggregates", out)


def test_consumer_quickstart_resumes_from_checkpoints() -> None:
    out = run_example("consumer_quickstart.py")
    assert "first run: processed 30 orders" in out
    assert "second run: resumed from the checkpoints and processed 20 orders" in out
    assert "50 distinct orders of 50, 0 processed twice" in out


def test_archive_to_s3() -> None:
    out = run_example("archive_to_s3.py")
    archived = re.search(r"archived (\d+) records in (\d+) objects", out)
    assert archived is not None, out
    assert int(archived.group(1)) == 500
    keys = re.findall(r"s3://clickstream-archive/(\S+)", out)
    assert len(keys) == int(archived.group(2)) >= 2  # objects never mix shards: 2 at least
    layout = r"clicks/\d{4}/\d\d/\d\d/\d\d/clickstream-shardId-\d+-\d+-\d+\.ndjson\.gz"
    assert all(re.fullmatch(layout, key) for key in keys), keys
    assert re.search(r'first line of the first object: \{"user_id":"user-\d+"', out)


def test_web_service_logs_every_request() -> None:
    out = run_example("web_service.py")
    statuses = re.findall(r"^  (GET|POST) (\S+) -> (\d+)$", out, re.MULTILINE)
    logged = re.findall(r"^  web\.request (GET|POST) (\S+) (\d+) [\d.]+ ms \(service=shop\)$",
                        out, re.MULTILINE)
    assert len(statuses) == 5, out
    assert sorted(logged) == sorted(statuses), out
    assert ("GET", "/items/seven", "404") in logged
    assert "5 requests logged" in out


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
