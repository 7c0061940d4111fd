"""What every bench script shares: the import path and Django settings its workers need,
progress on stderr (stdout carries the report), and the one percentile definition all
figures use. Importing it sets up the path (bench/ is the script directory, first on
sys.path, so `from benchlib import …` works before anything else)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, BENCH_DIR):  # BENCH_DIR ends up first, as the scripts always had it
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest sample with at least pct % of the samples at or below it."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]
