"""``python -m shardflow``: the same as the ``shardflow`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
