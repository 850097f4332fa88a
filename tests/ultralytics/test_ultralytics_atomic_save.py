"""On the ultralytics host too, checkpoints and exports are written atomically (yolov5_dattn/hosts/ultralytics/
atomic_saves.py, through yolov5_dattn/atomic.py): a SIGKILL in the middle of a training's save leaves the previous
last.pt loadable; a full disk is one `error:` line, exit 2, with last.pt / best.pt intact and no temp file left;
strip_optimizer and Model.save keep the previous file on a full disk; a failed ONNX or OpenVINO export leaves the
previous export as it was and nothing half-written.

Each command runs in a fresh Python (tests/ultralytics_faults.py injects the fault) with the network blocked."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import IMGSZ, REPO
from test_ultralytics_resume import TRAIN, tree, yolo_with


def hidden(folder: Path) -> list:
    """Temp files and staging folders (`.name.<pid>.*`, `.dattn-export.<pid>.*`) in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def errors(proc: subprocess.CompletedProcess) -> list:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("fault", ["kill-mid-save", "full-disk"])
def test_a_training_that_dies_while_saving_keeps_the_previous_checkpoints(fault, udata, tmp_path):
    """Epoch 0's last.pt and best.pt are written; epoch 1's write of last.pt is killed half-way / hits a full disk."""
    proc = yolo_with(fault, "train", *TRAIN, f"data={udata['det_yaml']}", f"project={tmp_path}", "name=run",
                     cwd=tmp_path)
    weights = tmp_path / "run" / "weights"
    for name in ("last.pt", "best.pt"):  # the previous complete version, loadable
        ckpt = torch.load(weights / name, weights_only=False)
        assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None, name
    if fault == "kill-mid-save":
        assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
        stale = hidden(weights)  # the dead process's half-written temp file, beside an intact last.pt
        assert len(stale) == 1 and stale[0].startswith(".last.pt.")
        assert 0 < (weights / stale[0]).stat().st_size < (weights / "last.pt").stat().st_size
    else:
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert len(errors(proc)) == 1 and "Traceback" not in proc.stderr
        assert f"cannot write {weights / 'last.pt'}: No space left on device" in errors(proc)[0]
        assert "previous last.pt is kept" in errors(proc)[0]
        assert hidden(weights) == []


# strip_optimizer (final_eval runs it on last.pt and best.pt) and Model.save: on a full disk, then with space
STRIP_AND_SAVE = """
import errno, json, os, sys, torch
import yolov5_dattn.hosts.ultralytics as host
host.use_policy()
from yolov5_dattn import atomic
from yolov5_dattn.errors import UserError
from ultralytics import YOLO
from ultralytics.utils.torch_utils import strip_optimizer
best, saved = sys.argv[1:3]
real, out = atomic._write_all, {}
def full(fd, data):
    real(fd, memoryview(data).cast("B")[:10_000])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
files = lambda: {f: open(f, "rb").read() for f in (best, saved)}
before = files()
atomic._write_all = full
for name, call in (("strip", lambda: strip_optimizer(best, updates={"mark": 1})),
                   ("save", lambda: YOLO(best).save(saved))):
    try:
        call()
        out[name] = "written"
    except UserError as e:
        out[name] = str(e)
out["intact"] = files() == before
out["listing"] = sorted(os.listdir(os.path.dirname(best)))
atomic._write_all = real
strip_optimizer(best, updates={"mark": 1})
YOLO(best).save(saved)
out["marks"] = [torch.load(f, weights_only=False).get("mark") for f in (best, saved)]
print(json.dumps(out))
"""


def test_strip_optimizer_and_model_save_on_a_full_disk_keep_the_previous_file(trained_u, tmp_path):
    best, saved = tmp_path / "best.pt", tmp_path / "saved.pt"
    best.write_bytes((trained_u / "weights" / "best.pt").read_bytes())
    saved.write_bytes(b"the previous saved.pt")
    proc = subprocess.run([sys.executable, "-c", STRIP_AND_SAVE, str(best), str(saved)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["strip"].startswith(f"cannot write {best}: No space left on device"), out
    assert out["save"].startswith(f"cannot write {saved}: No space left on device"), out
    assert out["intact"] and out["listing"] == ["best.pt", "saved.pt"]  # byte-identical, no temp file
    assert out["marks"] == [1, 1] and hidden(tmp_path) == []  # with space: both written, through the same path


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_failed_export_keeps_the_previous_export(fmt, trained_u, tmp_path):
    best = tmp_path / "best.pt"
    best.write_bytes((trained_u / "weights" / "best.pt").read_bytes())
    export = ["export", f"model={best}", f"format={fmt}", f"imgsz={IMGSZ}"]
    ok = yolo_with("none", *export, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    out = tmp_path / ("best.onnx" if fmt == "onnx" else "best_openvino_model")
    before = tree(tmp_path)
    assert (out.is_file() if fmt == "onnx" else len(tree(out)) == 3) and hidden(tmp_path) == []

    if fmt == "onnx":  # a kill inside the writer: the staging folder is left, the previous export untouched
        killed = yolo_with("onnx-kill", *export, cwd=tmp_path)
        assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
        stale = hidden(tmp_path)
        assert len(stale) == 1 and stale[0].startswith(".dattn-export.")
        assert tree(tmp_path / stale[0]) and {k: v for k, v in tree(tmp_path).items()
                                              if not k.startswith(".")} == before
    full = yolo_with(f"{fmt}-full-disk", *export, cwd=tmp_path)
    assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
    assert len(errors(full)) == 1 and "Traceback" not in full.stderr
    assert f"cannot export {best}: No space left on device" in errors(full)[0]
    assert tree(tmp_path) == before and hidden(tmp_path) == []  # and the killed export's staging is gone
