"""`yolo train resume model=<run>/weights/last.pt` writes only into <run> (yolov5_dattn/hosts/ultralytics/resume.py),
whatever folder the checkpoint's `train_args.save_dir` names; a checkpoint outside a weights/ folder is refused.

Each command runs in a fresh Python (tests/ultralytics_faults.py) with the network blocked and logged."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import IMGSZ, NETGUARD

FAULTS = Path(__file__).resolve().parents[1] / "ultralytics_faults.py"
TRAIN = ["model=yolo11n-c3k2-dattn.yaml", "epochs=2", "batch=4", f"imgsz={IMGSZ}", "device=cpu", "workers=0",
         "plots=False", "val=False"]


def yolo_with(fault: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """`yolov5-dattn yolo args...` in a fresh Python with `fault` armed; the network blocked, attempts logged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(cwd / "net.log")}
    return subprocess.run([sys.executable, str(FAULTS), fault, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def tree(folder: Path) -> dict:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def epochs_logged(run: Path) -> list:
    return [int(float(row["epoch"])) for row in csv.DictReader(open(run / "results.csv"))]


@pytest.fixture(scope="module")
def interrupted_run(udata, tmp_path_factory) -> Path:
    """A run of 2 epochs killed (SIGKILL) right after epoch 0's checkpoints were written."""
    work = tmp_path_factory.mktemp("uresume")
    proc = yolo_with("stop", "train", *TRAIN, f"data={udata['det_yaml']}", f"project={work}", "name=a", cwd=work)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = work / "a"
    assert torch.load(run / "weights" / "last.pt", weights_only=False)["epoch"] == 0
    return run


def test_resume_writes_only_beside_the_checkpoint(interrupted_run, tmp_path):
    run = tmp_path / "runs" / "mine"
    shutil.copytree(interrupted_run, run)
    last = run / "weights" / "last.pt"
    elsewhere = tmp_path / "elsewhere" / "planted"
    ckpt = torch.load(last, weights_only=False)
    ckpt["train_args"]["save_dir"] = str(elsewhere)  # what a crafted last.pt says
    torch.save(ckpt, last)
    work = tmp_path / "cwd"
    work.mkdir()

    proc = yolo_with("none", "train", "resume", f"model={last}", cwd=work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "runs"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mine"]
    assert sorted(p.name for p in work.iterdir()) == []  # no runs/ here either, and no network attempt logged
    notices = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("notice:")]
    assert len(notices) == 1, notices
    assert str(elsewhere) in notices[0] and f"writing to {run} instead" in notices[0]
    # the run continued where it stopped, in its own folder
    assert epochs_logged(run) == [1, 2]
    assert torch.load(last, weights_only=False)["epoch"] == -1  # finished and stripped
    assert yaml.safe_load(open(run / "args.yaml"))["save_dir"] == str(run)


def test_resume_of_a_checkpoint_outside_a_weights_folder_is_refused(interrupted_run, tmp_path):
    loose = tmp_path / "ck.pt"
    shutil.copy(interrupted_run / "weights" / "last.pt", loose)
    before = tree(interrupted_run)
    proc = yolo_with("none", "train", "resume", f"model={loose}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"resume model={loose}" in errors[0] and "weights/" in errors[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no run folder, no network attempt logged
    assert tree(interrupted_run) == before
