"""A training interrupted mid-run continues with --resume and loses at most the epoch in progress.

Detection: interrupted in-process right after epoch 0's last.pt (a callback raises, as a kill would
stop it there). Segmentation (YOLOv5's segment trainer runs no callbacks): the real script is started
in a subprocess and SIGKILLed as soon as a loadable last.pt exists.
"""
import csv
import signal
import subprocess
import time

import pytest
import torch
from yolov5.utils.callbacks import Callbacks

from conftest import DET_CFG, SEG_CFG, TRAIN_FLAGS, run_script, run_task


class Interrupted(Exception):
    """Stands in for the process being killed right after last.pt of epoch 0 was written."""


def _epochs_logged(run) -> list:
    rows = list(csv.DictReader(open(run / "results.csv")))
    return [int(float(r[next(k for k in r if k.strip() == "epoch")])) for r in rows]


def test_detection_resumes_after_interruption(demo, tmp_path, network_attempts):
    callbacks = Callbacks()

    def on_model_save(last, epoch, final_epoch, best_fitness, fi):
        if epoch == 0:
            raise Interrupted

    callbacks.register_action("on_model_save", callback=on_model_save)
    args = ["--cfg", DET_CFG, "--data", demo["det_yaml"], "--epochs", "2", *TRAIN_FLAGS, "--noplots", "--noval",
            "--project", tmp_path, "--name", "exp"]
    with pytest.raises(Interrupted):
        run_task("train", *args, callbacks=callbacks)
    run = tmp_path / "exp"
    last = run / "weights" / "last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 0  # the state a kill would leave

    assert run_task("train", "--resume", last) == 0
    assert _epochs_logged(run) == [0, 1]  # epoch 0 kept, epoch 1 done after resuming, nothing redone
    assert not (tmp_path / "exp2").exists()  # resumed into the same run folder
    assert network_attempts == []


def _wait_for_checkpoint(proc: subprocess.Popen, last, timeout: float = 600) -> int:
    """Poll until `last` loads (it is written non-atomically); returns its epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                return torch.load(last, weights_only=False)["epoch"]
            except Exception:  # caught mid-write: try again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no loadable {last} before the training ended (rc={proc.poll()})")


def test_segmentation_resumes_after_kill(demo, tmp_path, network_attempts):
    epochs = 2
    args = ["--cfg", SEG_CFG, "--data", demo["seg_yaml"], "--epochs", str(epochs), *TRAIN_FLAGS, "--noplots",
            "--project", tmp_path, "--name", "exp"]
    log = tmp_path / "net.log"
    proc = run_script("segment/train.py", *args, cwd=tmp_path, log=log, wait=False)
    last = tmp_path / "exp" / "weights" / "last.pt"
    try:
        killed_at = _wait_for_checkpoint(proc, last)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and 0 <= killed_at < epochs - 1

    assert run_task("segment-train", "--resume", last) == 0
    logged = [e for e in _epochs_logged(tmp_path / "exp") if e < epochs]  # (+ a final row labelled `epochs`)
    assert logged[:killed_at + 1] == list(range(killed_at + 1))  # what was done before the kill is kept
    assert sorted(set(logged)) == list(range(epochs))  # and every epoch got done
    assert not (tmp_path / "exp2").exists() and not log.exists() and network_attempts == []
