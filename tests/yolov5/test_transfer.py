"""Transfer from a baseline checkpoint: everything whose name and shape match is loaded, the attention
starts fresh, and scripts/train.py prints a table of both with counts.

Two tiny trainings on conftest's demo data (64 px, 8 images, one epoch each), in-process to save the
~10 s import of a subprocess: a yolov5n.yaml baseline, then yolov5n_c3_dattn.yaml from its last.pt
through scripts/train.py (so the wrapper's transfer report is the one under test). The model as
loaded, before the first optimiser step, is captured by spying on `yolov5.train.smart_optimizer`,
which train.py calls right after loading the weights.
"""
import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "train.py"
DATTN_CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"
IMGSZ = 64


def run_train_script(argv) -> int:
    """`python scripts/train.py *argv` in this process; returns its exit status."""
    saved_argv, deterministic = sys.argv, torch.are_deterministic_algorithms_enabled()
    sys.argv = [str(TRAIN), *map(str, argv)]
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = saved_argv
        torch.use_deterministic_algorithms(deterministic)  # YOLOv5's init_seeds switches it on


def common_args(data: Path, project: Path, name: str):
    return ["--data", data, "--imgsz", IMGSZ, "--epochs", 1, "--batch-size", 4, "--workers", 0,
            "--device", "cpu", "--project", project, "--name", name, "--exist-ok", "--noplots"]


@pytest.fixture(scope="module")
def runs(demo, tmp_path_factory) -> dict:
    """{"baseline", "dattn" (last.pt paths), "report" (TransferReport), "loaded" (the dattn model's
    state_dict as loaded, before training), "log" (what YOLOv5's LOGGER printed during the dattn run)}"""
    import yolov5_dattn  # noqa: F401  (compat layer before yolov5.train is imported)
    import yolov5.train
    from yolov5.utils.general import LOGGER

    from yolov5_dattn.hosts.yolov5 import transfer

    project = tmp_path_factory.mktemp("transfer") / "runs"
    baseline_cfg = Path(yolov5.train.__file__).parent / "models" / "yolov5n.yaml"
    assert run_train_script(["--cfg", baseline_cfg, *common_args(demo["det_yaml"], project, "baseline")]) == 0
    baseline = project / "baseline" / "weights" / "last.pt"

    loaded = {}
    real = yolov5.train.smart_optimizer

    def spy(model, *args, **kwargs):
        loaded.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    class Collect(logging.Handler):
        def emit(self, record):
            log.append(record.getMessage())

    log, collect = [], Collect(logging.INFO)
    yolov5.train.smart_optimizer = spy
    LOGGER.addHandler(collect)
    try:
        transfer.last_report = None
        status = run_train_script(["--cfg", DATTN_CFG, "--weights", baseline,
                                   *common_args(demo["det_yaml"], project, "dattn")])
    finally:
        yolov5.train.smart_optimizer = real
        LOGGER.removeHandler(collect)
    assert status == 0
    return {"baseline": baseline, "dattn": project / "dattn" / "weights" / "last.pt",
            "report": transfer.last_report, "loaded": loaded, "log": "\n".join(log)}


def state_dict(path):
    from yolov5_dattn.hosts.yolov5.checkpoints import load
    ckpt = load(path, map_location="cpu")
    return (ckpt.get("ema") or ckpt["model"]).float().state_dict()


def test_transfer_counts_and_values(runs):
    baseline, new = state_dict(runs["baseline"]), state_dict(runs["dattn"])
    report = runs["report"]
    assert report is not None, "scripts/train.py did not report the transfer"

    # independent count: same name, same shape, anchors excluded (YOLOv5 does so when --cfg is given)
    expected = sorted(k for k, v in new.items() if k in baseline and baseline[k].shape == v.shape and "anchor" not in k)
    assert sorted(report.keys["transferred"]) == expected
    attention = sorted(k for k in new if ".attention." in k)
    assert len(attention) >= 15 and not any(k in baseline for k in attention)
    assert sorted(report.keys["attention"]) == attention
    assert report.keys["excluded"] == ["model.24.anchors"]
    assert report.keys["shape"] == [] and report.keys["missing"] == []
    assert report.total == len(new)
    # the C3 -> C3_DAttention block keeps its convolutions, so they come from the baseline too
    for key in ("model.8.cv1.conv.weight", "model.8.cv3.bn.running_var", "model.8.m.0.cv2.conv.weight"):
        assert key in report.keys["transferred"]

    # what the model held right after loading, before the first step: exactly the baseline's values
    loaded = runs["loaded"]
    for key in expected:
        assert torch.equal(loaded[key], baseline[key]), key
    # and training then moved them (the run really used the loaded weights as its start)
    assert not torch.equal(new["model.8.cv1.conv.weight"], baseline["model.8.cv1.conv.weight"])


def test_transfer_table_is_printed(runs):
    report, log, new = runs["report"], runs["log"], state_dict(runs["dattn"])
    lines = log.splitlines()
    row = next(line for line in lines if "transferred from the checkpoint" in line)
    assert row.split()[-2] == str(len(report.keys["transferred"]))
    row = next(line for line in lines if "fresh: DAttention layers" in line)
    assert row.split()[-2] == str(len(report.keys["attention"]))
    assert row.split()[-1] == f"{sum(v.numel() for k, v in new.items() if '.attention.' in k):,}"
    assert "fresh DAttention: model.8.m.0.attention" in log
