"""Where a measurement came from: the code's version and the time, written into result files and plots.

A number without its commit cannot be checked against the code that produced it, so every file the analysis
commands write carries `commit` (the checkout's `git rev-parse --short HEAD`, with `+dirty` when tracked files
differ from it; the package version when not run from a git checkout) and `date` (UTC, ISO 8601).
"""
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages, for an installed wheel)


def _git(*args: str) -> Optional[str]:
    """Output of `git -C ROOT <args>`, or None when git is missing or fails."""
    try:
        # --no-optional-locks: reading the state must not write git's index (others may be using the checkout)
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> str:
    """`abc1234` (or `abc1234+dirty`) in a git checkout of this project, else `yolov5-dattn <version>`."""
    top = _git("rev-parse", "--show-toplevel")
    # only our own checkout: an installed wheel may sit inside some other repository's tree
    if top and Path(top).resolve() == ROOT:
        commit = _git("rev-parse", "--short", "HEAD")
        if commit:
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            return commit + ("+dirty" if dirty else "")
    from yolov5_dattn import __version__
    return f"yolov5-dattn {__version__}"


def stamp() -> Dict[str, str]:
    """{'commit': code_version(), 'date': now in UTC, e.g. '2026-12-02T00:30:00+00:00'}."""
    return {"commit": code_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
