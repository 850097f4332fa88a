"""A training interrupted mid-run continues with --resume and loses at most the epoch in progress; a
checkpoint that cannot be resumed is one `error:` line (exit 2) before anything is written.

Detection: interrupted in-process right after epoch 0's last.pt (a callback raises, as a kill would
stop it there). Segmentation (YOLOv5's segment trainer runs no callbacks): the real script runs in a
subprocess whose test-only sitecustomize (tests/killhook) SIGKILLs it right after the first last.pt is
written, so the state is the same on any machine, however loaded.
"""
import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from yolov5.utils.callbacks import Callbacks

from conftest import DET_CFG, REPO, SEG_CFG, TRAIN_FLAGS, run_script, run_task

KILLHOOK = Path(__file__).resolve().parents[1] / "killhook"


class Interrupted(Exception):
    """Stands in for the process being killed right after last.pt of epoch 0 was written."""


def _epochs_logged(run) -> list:
    rows = list(csv.DictReader(open(run / "results.csv")))
    return [int(float(r[next(k for k in r if k.strip() == "epoch")])) for r in rows]


def _train_interrupted_after_epoch0(demo, project: Path, epochs: int) -> Path:
    """Detection run `project/exp` stopped right after epoch 0's checkpoints; returns its last.pt."""
    callbacks = Callbacks()

    def on_model_save(last, epoch, final_epoch, best_fitness, fi):
        if epoch == 0:
            raise Interrupted

    callbacks.register_action("on_model_save", callback=on_model_save)
    args = ["--cfg", DET_CFG, "--data", demo["det_yaml"], "--epochs", str(epochs), *TRAIN_FLAGS, "--noplots",
            "--noval", "--project", project, "--name", "exp"]
    with pytest.raises(Interrupted):
        run_task("train", *args, callbacks=callbacks)
    return project / "exp" / "weights" / "last.pt"


def test_detection_resumes_after_interruption(demo, tmp_path, network_attempts):
    last = _train_interrupted_after_epoch0(demo, tmp_path, epochs=2)
    run = last.parent.parent
    assert torch.load(last, weights_only=False)["epoch"] == 0  # the state a kill would leave

    assert run_task("train", "--resume", last) == 0
    assert _epochs_logged(run) == [0, 1]  # epoch 0 kept, epoch 1 done after resuming, nothing redone
    assert not (tmp_path / "exp2").exists()  # resumed into the same run folder
    assert network_attempts == []


def test_segmentation_resumes_after_kill(demo, tmp_path, network_attempts):
    epochs = 2
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(KILLHOOK), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(log), "KILL_AFTER_WRITING": "last.pt"}
    args = ["--cfg", SEG_CFG, "--data", demo["seg_yaml"], "--epochs", str(epochs), *TRAIN_FLAGS, "--noplots",
            "--project", tmp_path, "--name", "exp"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "segment" / "train.py"), *map(str, args)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "skipping check" not in proc.stdout + proc.stderr  # no "github: skipping check" noise
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 0  # killed right after epoch 0's checkpoint
    assert _epochs_logged(tmp_path / "exp") == [0]

    assert run_task("segment-train", "--resume", last) == 0
    logged = [e for e in _epochs_logged(tmp_path / "exp") if e < epochs]  # (+ a final row labelled `epochs`)
    assert logged == [0, 1]  # epoch 0 kept, epoch 1 done after resuming, nothing redone
    assert not (tmp_path / "exp2").exists() and not log.exists() and network_attempts == []


# ---- checkpoints that cannot be resumed ---------------------------------------------------------------
@pytest.fixture(scope="module")
def final_unstripped(demo, tmp_path_factory) -> Path:
    """last.pt of a 1-epoch detection run stopped after its (last) epoch's save, before YOLOv5 stripped it."""
    last = _train_interrupted_after_epoch0(demo, tmp_path_factory.mktemp("final"), epochs=1)
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None  # YOLOv5 itself crashes resuming this
    return last


def _finished(last: Path) -> str:
    from yolov5.utils.general import strip_optimizer
    strip_optimizer(last)  # what YOLOv5 does at the end of every run
    return "the run already trained all 1 epoch (was finished and stripped by YOLOv5)"


def _killed_after_last_epoch(last: Path) -> str:
    return "the run already trained all 1 epoch (stopped after its last epoch, before YOLOv5 finalized it)"


def _truncated(last: Path) -> str:
    data = last.read_bytes()
    last.write_bytes(data[:len(data) // 2])
    return "is truncated or not a PyTorch checkpoint"


def _bare_state_dict(last: Path) -> str:
    ckpt = torch.load(last, weights_only=False)
    torch.save(ckpt["model"].state_dict(), last)
    return "is not a YOLOv5 training checkpoint"


def _no_options(last: Path) -> str:
    ckpt = torch.load(last, weights_only=False)
    del ckpt["opt"]
    torch.save(ckpt, last)
    (last.parent.parent / "opt.yaml").unlink()
    return "there is no"


def _dataset_gone(last: Path) -> str:
    opt_yaml = last.parent.parent / "opt.yaml"
    options = yaml.safe_load(opt_yaml.read_text())
    options["data"], options["epochs"] = str(last.parent / "moved.yaml"), 2  # one epoch left, data gone
    opt_yaml.write_text(yaml.safe_dump(options))
    return "moved.yaml (from"


def _snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("task,make", [
    ("train", _finished), ("train", _killed_after_last_epoch), ("train", _truncated),
    ("train", _bare_state_dict), ("train", _no_options), ("train", _dataset_gone),
    ("segment-train", _killed_after_last_epoch)])
def test_unresumable_checkpoint_is_one_line_and_writes_nothing(task, make, final_unstripped, tmp_path, capsys,
                                                               network_attempts):
    run = tmp_path / "runs" / "exp"
    shutil.copytree(final_unstripped.parent.parent, run)
    last = run / "weights" / "last.pt"
    expected = make(last)
    if task == "segment-train":
        expected = "is a detection checkpoint: resume it with scripts/train.py --resume"
    before = _snapshot(tmp_path)
    capsys.readouterr()

    assert run_task(task, "--resume", last) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --resume {last}") and expected in err[0], err
    assert _snapshot(tmp_path) == before  # no new run folder, nothing rewritten
    assert network_attempts == []


def test_bare_resume_without_any_run_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_task("train", "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: no last.pt under"), err
    assert list(tmp_path.iterdir()) == []


def test_cli_resume_of_a_run_killed_after_its_last_epoch(final_unstripped, tmp_path):
    """The crash this replaces: YOLOv5's `UnboundLocalError: ... 'epoch'` traceback."""
    run = tmp_path / "exp"
    shutil.copytree(final_unstripped.parent.parent, run)
    last = run / "weights" / "last.pt"
    result = run_script("train.py", "--resume", last, cwd=tmp_path, log=tmp_path / "net.log")
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --resume {last}: the run already trained all 1 epoch"), err
    assert "--weights" in err[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
