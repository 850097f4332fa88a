"""Checkpoints are written atomically (yolov5_dattn/atomic.py, routed in by policy.shim_atomic_checkpoint_saves):
a kill in the middle of a save leaves the previous file loadable; a full disk is one `error:` line, exit 2, with
the previous checkpoint intact and no temp file left. Covers YOLOv5's train.py saves (last.pt, best.pt),
strip_optimizer, and the TorchScript export."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from yolov5.utils.callbacks import Callbacks

from conftest import DET_CFG, TRAIN_FLAGS, run_task
from yolov5_dattn import atomic

# the child saves through yolov5.train's own `torch` (what train.py's `torch.save(ckpt, last)` calls), with a
# test-only hook at the byte-writing seam that SIGKILLs the process once half the new checkpoint is written
KILL_CHILD = """
import os, signal, sys, torch
from yolov5_dattn.hosts.yolov5 import compat
from yolov5_dattn import atomic
compat.apply_entrypoints()
import yolov5.train
write_all, written = atomic._write_all, [0]
def dying_write(fd, data):
    if written[0] > 2_000_000:  # the new checkpoint is ~4 MB
        os.kill(os.getpid(), signal.SIGKILL)
    write_all(fd, data)
    written[0] += len(memoryview(data).cast("B"))
atomic._write_all = dying_write
yolov5.train.torch.save({"epoch": 1, "w": torch.ones(1_000_000)}, sys.argv[1])
print("save finished")
"""


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def no_space(after_bytes: int = 0):
    """A replacement for atomic._write_all that fails like a full disk once `after_bytes` were written."""
    written = [0]
    real = atomic._write_all

    def write_all(fd, data):
        n = len(memoryview(data).cast("B"))
        if written[0] + n > after_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)
        written[0] += n
    return write_all


def test_kill_inside_a_save_keeps_the_previous_checkpoint(tmp_path):
    last = tmp_path / "weights" / "last.pt"
    last.parent.mkdir()
    atomic.atomic_save({"epoch": 0, "w": torch.zeros(1_000_000)}, last)
    before = last.read_bytes()

    proc = subprocess.run([sys.executable, "-c", KILL_CHILD, str(last)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]  # killed mid-save, by the hook
    assert "save finished" not in proc.stdout
    assert last.read_bytes() == before and torch.load(last)["epoch"] == 0
    stale = leftovers(last.parent)
    assert len(stale) == 1 and stale[0].startswith(".last.pt.") and (last.parent / stale[0]).stat().st_size > 2e6

    atomic.atomic_save({"epoch": 1}, last)  # the next save removes the dead process's temp file
    assert torch.load(last)["epoch"] == 1 and leftovers(last.parent) == []


def test_save_keeps_permissions_and_leaves_no_temp(tmp_path):
    path = tmp_path / "best.pt"
    atomic.atomic_save({"a": torch.arange(5)}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as torch.save would create it, not mkstemp's 0600
    os.chmod(path, 0o640)
    atomic.atomic_save({"a": torch.arange(6)}, path)
    assert path.stat().st_mode & 0o777 == 0o640 and torch.equal(torch.load(path)["a"], torch.arange(6))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("after_bytes", [0, 100_000])  # nothing written / part of the tensor data written
def test_full_disk_raises_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, after_bytes):
    from yolov5_dattn.errors import UserError
    path = tmp_path / "last.pt"
    atomic.atomic_save({"epoch": 0}, path)
    before = path.read_bytes()
    monkeypatch.setattr(atomic, "_write_all", no_space(after_bytes))
    with pytest.raises(UserError) as e:
        atomic.atomic_save({"epoch": 1, "w": torch.zeros(100_000)}, path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "No space left on device" in message
    assert "MB free" in message and "previous last.pt is kept" in message
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_training_on_a_full_disk_is_one_line_and_keeps_last_pt(demo, tmp_path, monkeypatch, capsys,
                                                               network_attempts):
    """Epoch 0's checkpoints are written; the disk is full when epoch 1 saves: exit 2, one line, epoch 0 kept."""
    callbacks = Callbacks()

    def on_model_save(last, epoch, final_epoch, best_fitness, fi):
        if epoch == 0:
            monkeypatch.setattr(atomic, "_write_all", no_space(50_000))

    callbacks.register_action("on_model_save", callback=on_model_save)
    rc = run_task("train", "--cfg", DET_CFG, "--data", demo["det_yaml"], "--epochs", "2", *TRAIN_FLAGS, "--noplots",
                  "--noval", "--project", tmp_path, "--name", "exp", callbacks=callbacks)
    err = capsys.readouterr().err
    weights = tmp_path / "exp" / "weights"
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(weights / "last.pt") in errors[0] and "No space left" in errors[0], err[-2000:]
    assert torch.load(weights / "last.pt", weights_only=False)["epoch"] == 0
    assert torch.load(weights / "best.pt", weights_only=False)["epoch"] == 0
    assert leftovers(weights) == [] and network_attempts == []


def _tiny_checkpoint(path: Path) -> Path:
    """A checkpoint as train.py writes it, of an untrained n-scale model (no training needed)."""
    from yolov5.models.yolo import DetectionModel
    model = DetectionModel(str(DET_CFG), nc=2)
    model.names = {0: "a", 1: "b"}
    atomic.atomic_save({"epoch": 3, "best_fitness": 0.5, "model": model.half(), "ema": None, "updates": 1,
                        "optimizer": {"state": {}}}, path)
    return path


def test_strip_optimizer_is_atomic(tmp_path, monkeypatch):
    from yolov5.utils.general import strip_optimizer
    from yolov5_dattn.errors import UserError
    best = _tiny_checkpoint(tmp_path / "best.pt")
    before = best.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(atomic, "_write_all", no_space(10_000))
        with pytest.raises(UserError, match="cannot write .*best.pt: No space left on device"):
            strip_optimizer(best)
    assert best.read_bytes() == before and leftovers(tmp_path) == []
    strip_optimizer(best)  # and with space: done, through the same path
    stripped = torch.load(best, weights_only=False)
    assert stripped["epoch"] == -1 and stripped["optimizer"] is None and leftovers(tmp_path) == []


def test_torchscript_export_failing_midway_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    pt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "model.torchscript"
    args = ["--weights", pt, "--include", "torchscript", "--imgsz", "64", "--device", "cpu"]
    assert run_task("export", *args) == 0
    first = out.read_bytes()
    assert torch.jit.load(str(out)) is not None and leftovers(tmp_path) == []

    def half_written_save(self, f, **kwargs):  # a full disk in the middle of TorchScript's own writer
        Path(f).write_bytes(first[:len(first) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.jit.ScriptModule, "save", half_written_save)
    assert run_task("export", *args) == 2
    assert "error: --include torchscript" in capsys.readouterr().err
    assert out.read_bytes() == first and leftovers(tmp_path) == []
