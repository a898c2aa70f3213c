"""``pip install shardflow`` without extras, for real: a wheel built from this checkout is
installed into a fresh virtual environment (its three runtime dependencies come from the
package index), and the commands and calls that need the ``local`` extra say, in one line,
what to install (issue 17, item 2). About 15 s, most of it pip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import ROOT

HINT = "pip install 'shardflow[local]'"


def _clean_env() -> dict[str, str]:
    """The environment without what would let the venv see this checkout's sources."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _wheel(folder: Path) -> list[Path]:
    """Build the wheel of this checkout into ``folder`` once per session."""
    if not folder.is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check", "wheel",
             "--no-deps", "--wheel-dir", str(folder), str(ROOT)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return sorted(folder.glob("shardflow-*.whl"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv holding shardflow and its runtime dependencies only."""
    root = tmp_path_factory.mktemp("plain-install")
    (wheel,) = _wheel(root / "dist")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    bin_dir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check",
         "install", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env=_clean_env(),
    )
    return bin_dir


def _run(bin_dir: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = _clean_env()
    return subprocess.run(
        [str(bin_dir / command[0]), *command[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=bin_dir,  # not the checkout, whose src/ must not be importable
        check=False,
    )


def test_the_plain_install_has_no_extras(plain: Path) -> None:
    code = (
        "import importlib.util as u, shardflow\n"
        "print(shardflow.__file__)\n"
        "print([m for m in ('moto', 'werkzeug', 'pytest') if u.find_spec(m)])\n"
    )
    out = _run(plain, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    where, extras = out.stdout.splitlines()
    assert str(plain.parent) in where  # the installed wheel, not the checkout
    assert extras == "[]"


def test_aggregates_are_read_without_the_protobuf_extra(plain: Path) -> None:
    """Without protobuf, deaggregation runs the parser in Python (no C parser to ask)."""
    code = (
        "import importlib.util as u\n"
        "from shardflow.aggregation import aggregate, deaggregate\n"
        "from shardflow._core.aggregate_parser import parse_upb\n"
        "blob = aggregate([('k', None, b'x'), ('j', '5', b'y')])\n"
        "print(u.find_spec('google') is None, parse_upb(blob, 4, len(blob) - 16))\n"
        "print(deaggregate(blob))\n"
    )
    out = _run(plain, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True None", "[('k', None, b'x'), ('j', '5', b'y')]"]


@pytest.mark.parametrize("command", ["local", "demo"])
def test_commands_needing_the_local_extra_say_what_to_install(
    plain: Path, command: str
) -> None:
    proc = _run(plain, "shardflow", command)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"shardflow {command}: the local endpoint needs the moto server "
        f"(moto is not installed): {HINT}\n"
    )


def test_local_endpoint_raises_an_import_error_naming_the_extra(plain: Path) -> None:
    code = (
        "from shardflow import errors, local_endpoint\n"
        "try:\n"
        "    with local_endpoint():\n"
        "        pass\n"
        "except ImportError as exc:\n"
        "    print(isinstance(exc, errors.MissingDependency), exc)\n"
    )
    proc = _run(plain, "python", "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("True ")
    assert HINT in proc.stdout


def test_the_rest_of_the_cli_works_without_extras(plain: Path) -> None:
    proc = _run(plain, "shardflow", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout
    proxy = _run(plain, "shardflow", "proxy", "--help")  # aiohttp comes with aiobotocore
    assert proxy.returncode == 0, proxy.stderr


def test_the_wheel_describes_itself_for_a_package_index(plain: Path) -> None:
    """Metadata an index shows: license file and expression, classifiers, the extras, and
    a README whose first screen says what it is and how to install it, with no link that
    is relative to the repository (it would break on the index)."""
    (wheel,) = _wheel(plain.parent.parent / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    head, _, readme = metadata.decode().partition("\n\n")
    fields = [line.split(": ", 1) for line in head.splitlines() if ": " in line]
    assert ["License-Expression", "Apache-2.0"] in fields
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "shardflow/py.typed" in names
    assert sum(1 for key, _ in fields if key == "Classifier") >= 8
    assert ["Requires-Dist", 'moto[server]>=5.0; extra == "local"'] in fields
    assert [key for key, value in fields if key == "Requires-Dist" and "extra" not in value] == [
        "Requires-Dist"
    ] * 3  # aiobotocore, anyio, orjson
    first_screen = "\n".join(readme.splitlines()[:25])
    assert "asyncio toolkit" in first_screen
    assert "pip install shardflow" in first_screen
    assert "pip install 'shardflow[local]'" in first_screen
    relative = re.findall(r"\]\((?!https?://)([^)]*)\)", readme)
    assert relative == [], f"links that break outside the repository: {relative}"
