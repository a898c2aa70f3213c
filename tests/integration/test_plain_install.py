"""``pip install shardflow`` without extras, for real: a wheel built from this checkout is
installed into a fresh virtual environment (its three runtime dependencies come from the
package index), and the commands and calls that need the ``local`` extra say, in one line,
what to install (issue 17, item 2). About 15 s, most of it pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

HINT = "pip install 'shardflow[local]'"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv holding shardflow and its runtime dependencies only."""
    root = tmp_path_factory.mktemp("plain-install")
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(root / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (root / "dist").glob("shardflow-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    bin_dir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check",
         "install", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return bin_dir


def _run(bin_dir: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
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
