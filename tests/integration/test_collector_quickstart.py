"""examples/collector_quickstart.py runs end to end and reads back what it posted."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support import ROOT


def test_collector_quickstart_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "collector_quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    posted = re.search(r"posted (\d+) events; (\d+) dropped by sampling", out)
    read = re.search(r"read back (\d+) events from Kinesis", out)
    assert posted is not None, out
    assert read is not None, out
    assert int(read.group(1)) == int(posted.group(1)) - int(posted.group(2))
    assert "left in spool 0" in out
    assert "hunter2" not in out
    assert '"password":"[REDACTED]"' in out
