"""examples/consumer_group.py runs end to end: two workers share the shards, every event
is processed once, a graceful close hands the leases over, whatever region the environment
names (issue 17 item 1: the example's own clients follow the same region rule)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support import ROOT


def test_consumer_group_example_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_REGION"] = "eu-west-1"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "consumer_group.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "shares the stream's 4 shards 2/2" in out, out
    processed = re.findall(r"(worker-[ab]) processed (\d+) events from (.+)", out)
    assert [name for name, _, _ in processed] == ["worker-a", "worker-b"], out
    assert sum(int(n) for _, n, _ in processed) == 200
    for _, n, shards in processed:
        assert int(n) > 0
        assert shards.count("shardId-") == 2  # two shards each
    assert "200 distinct events processed, 0 more than once" in out
    assert "worker-b closed gracefully: 2 of its 2 leases released" in out
    assert re.search(r"worker-a took them over [\d.]+s after the close", out), out
