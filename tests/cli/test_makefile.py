"""`make install` refuses a disk too small for the venv in one line, before creating anything."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_refuses_a_full_disk_before_creating_the_venv(tmp_path):
    for name in ("Makefile", "setup.cfg", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    # no machine has this much free: the check must fire
    proc = subprocess.run(["make", "install", "NEED_GB=100000000"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "100000000 GB free" in errors[0] and "GB free:" in errors[0]
    assert not (tmp_path / ".venv").exists()
