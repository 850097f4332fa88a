"""Segmentation workflow through the scripts' runner: train -> val -> predict; offline."""
import csv

import torch

from conftest import IMGSZ, run_task


def test_segment_train_val_predict(trained_seg, demo, tmp_path, network_attempts):
    best = trained_seg / "weights" / "best.pt"
    rows = list(csv.DictReader(open(trained_seg / "results.csv")))
    # one row per epoch (YOLOv5's segment logger adds a final-validation row labelled `epochs`)
    assert [int(r[next(k for k in r if k.strip() == "epoch")]) for r in rows][0] == 0
    # the checkpoint carries no `builtins.getattr` (Segment.detect shim) and loads with weights_only=True
    assert "builtins.getattr" not in torch.serialization.get_unsafe_globals_in_checkpoint(str(best))

    assert run_task("segment-val", "--weights", best, "--data", demo["seg_yaml"], "--imgsz", IMGSZ,
                    "--device", "cpu", "--workers", "0", "--project", tmp_path, "--name", "val") == 0
    assert (tmp_path / "val" / "confusion_matrix.png").is_file()

    assert run_task("segment-predict", "--weights", best, "--source", demo["seg_val_images"], "--imgsz", IMGSZ,
                    "--device", "cpu", "--project", tmp_path, "--name", "predict") == 0
    written = sorted(p.name for p in (tmp_path / "predict").iterdir())
    assert written == sorted(p.name for p in demo["seg_val_images"].iterdir())
    assert network_attempts == []
