"""What every bench script shares: the import path and Django settings its workers need,
progress on stderr (stdout carries the report), and the one percentile definition all
figures use, and the /proc readings and `manage.py` runs of the scripts that start hub
processes. Importing it sets up the path (bench/ is the script directory, first on
sys.path, so `from benchlib import …` works before anything else)."""

from __future__ import annotations

import os
import subprocess
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


def rss_kb(pid: int) -> int:
    """VmRSS of one process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py ARGS` with `env`; its stdout, or the run stops with its output."""
    done = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout
