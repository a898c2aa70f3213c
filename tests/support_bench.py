"""Makes the repository's ``benchmarks`` package importable from the tests.

pytest puts ``tests/`` on ``sys.path`` (pyproject ``pythonpath``), not the repository root;
importing this module first adds the root so ``import benchmarks...`` works from any cwd.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
