"""`--resume` writes only beside the checkpoint it was given (policy.shim_resume_beside_checkpoint): resuming a
copy of a run leaves the original run byte-identical, whatever folder the copy's opt.yaml or checkpoint names."""
import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from yolov5.utils.callbacks import Callbacks

from conftest import DET_CFG, TRAIN_FLAGS, run_task


class Interrupted(Exception):
    """Stands in for the process being killed right after last.pt of epoch 0 was written."""


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def epochs_logged(run: Path) -> list:
    rows = list(csv.DictReader(open(run / "results.csv")))
    return [int(float(r[next(k for k in r if k.strip() == "epoch")])) for r in rows]


@pytest.fixture(scope="module")
def interrupted_run(demo, tmp_path_factory) -> Path:
    """Run A: 2 epochs asked, stopped right after epoch 0's checkpoint was saved."""
    callbacks = Callbacks()

    def on_model_save(last, epoch, final_epoch, best_fitness, fi):
        if epoch == 0:
            raise Interrupted

    callbacks.register_action("on_model_save", callback=on_model_save)
    project = tmp_path_factory.mktemp("run-a")
    with pytest.raises(Interrupted):
        run_task("train", "--cfg", DET_CFG, "--data", demo["det_yaml"], "--epochs", "2", *TRAIN_FLAGS, "--noplots",
                 "--noval", "--project", project, "--name", "exp", callbacks=callbacks)
    return project / "exp"


@pytest.mark.parametrize("recorded_in", ["opt.yaml", "checkpoint"])  # YOLOv5 reads opt.yaml, else ckpt['opt']
def test_resuming_a_copied_run_writes_only_into_the_copy(interrupted_run, recorded_in, tmp_path, capsys,
                                                         network_attempts):
    a = interrupted_run
    b = tmp_path / "copy" / "exp"
    shutil.copytree(a, b)
    if recorded_in == "checkpoint":
        (b / "opt.yaml").unlink()
        assert Path(torch.load(b / "weights" / "last.pt", weights_only=False)["opt"]["save_dir"]) == a
    else:
        assert Path(yaml.safe_load(open(b / "opt.yaml"))["save_dir"]) == a
    before = snapshot(a)
    capsys.readouterr()

    assert run_task("train", "--resume", b / "weights" / "last.pt") == 0
    err = capsys.readouterr().err
    assert snapshot(a) == before  # the original run: no file changed, none added
    assert epochs_logged(b) == [0, 1] and torch.load(b / "weights" / "last.pt", weights_only=False)["epoch"] == -1
    assert Path(yaml.safe_load(open(b / "opt.yaml"))["save_dir"]) == b  # the copy now records itself
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and str(a) in notices[0] and f"writing to {b} instead" in notices[0]
    assert not (tmp_path / "copy" / "exp2").exists() and network_attempts == []


def test_resume_of_a_file_outside_a_weights_folder_is_refused(interrupted_run, tmp_path, capsys):
    loose = tmp_path / "ck.pt"
    shutil.copy(interrupted_run / "weights" / "last.pt", loose)
    before = snapshot(interrupted_run)
    assert run_task("train", "--resume", loose) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --resume") and "weights/" in err[-1] and "Traceback" not in "\n".join(err)
    assert snapshot(interrupted_run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
