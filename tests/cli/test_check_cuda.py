"""scripts/check_cuda.py on a CPU: the dry run prints its one table with every section and passes; CUDA asked for
where there is none is one `error:` line (exit 2); a row outside its limit makes the exit status 1.

The GPU run itself (and its numbers) needs a GPU: docs/performance.md says whether it has been made.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NETGUARD = Path(__file__).resolve().parents[1] / "netguard"


def check_cuda(*args, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(tmp_path / "net.log")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_cuda.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


def rows(stdout: str) -> list:
    """The table's rows (section, case, precision, ..., status) after its header and rule."""
    lines = stdout.splitlines()
    assert lines[1].split()[:3] == ["section", "case", "precision"] and set(lines[2]) <= {"-", " "}
    return [line for line in lines[3:] if line.strip()]


@pytest.mark.slow
def test_the_dry_run_runs_every_section_on_the_cpu_and_passes(tmp_path):
    run = check_cuda("--device", "cpu", "--dry-run", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "net.log").exists(), (tmp_path / "net.log").read_text()
    head = run.stdout.splitlines()[0]
    assert head.startswith("check_cuda --dry-run: cpu") and head.endswith(" 0 of 45 rows failed"), head
    table = rows(run.stdout)
    by_section = {}
    for line in table:
        by_section.setdefault(line.split()[0], []).append(line)
    assert {s: len(r) for s, r in by_section.items()} == {"accuracy": 24, "train": 2, "compile": 1, "speed": 3,
                                                          "backends": 15}
    assert all(line.endswith(" ok") for s in ("accuracy", "train", "compile") for line in by_section[s])
    assert all(line.endswith(" info") for s in ("speed", "backends") for line in by_section[s])
    assert all(" pos fp32 " in line for line in by_section["accuracy"])
    assert any("yolov5n_c3_dattn" in line for line in by_section["train"])
    assert any("yolo11n-c3k2-dattn" in line for line in by_section["train"])
    # on the CPU in fp32 our kernel runs; a bias that needs its gradient takes the explicit form
    assert "train: ours (CPU kernel)" in next(line for line in by_section["backends"] if " dwc " in line)
    assert "train: explicit" in next(line for line in by_section["backends"] if " table " in line)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_where_there_is_none_is_one_error_line(device, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    run = check_cuda("--device", device, tmp_path=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: --device {device}: no CUDA GPU is visible to PyTorch")
    assert len(run.stderr.splitlines()) == 1


def test_a_row_outside_its_limit_makes_the_exit_status_1(tmp_path):
    run = check_cuda("--device", "cpu", "--dry-run", "--sections", "accuracy", "--tol-scale", "0",
                     tmp_path=tmp_path)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    table = rows(run.stdout)
    assert len(table) == 24 and all(line.endswith(" FAIL") for line in table)
    assert run.stdout.splitlines()[0].endswith(" 24 of 24 rows failed")
