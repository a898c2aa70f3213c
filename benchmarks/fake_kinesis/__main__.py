"""``python -m benchmarks.fake_kinesis``: run the fake endpoint in the foreground."""

from __future__ import annotations

from .process import main

raise SystemExit(main())
