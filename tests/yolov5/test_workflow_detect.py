"""Detection workflow through the scripts' runner: train -> val -> detect (images, video) -> export ONNX ->
ONNX parity -> detect with the .onnx; offline (no socket opened)."""
import csv

import cv2
import numpy as np
import pytest
import torch

from conftest import IMGSZ, run_task


def _frames(path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_train_writes_weights_results_and_plots(trained_det, network_attempts):
    weights = trained_det / "weights"
    assert (weights / "best.pt").stat().st_size > 0 and (weights / "last.pt").stat().st_size > 0
    rows = list(csv.DictReader(open(trained_det / "results.csv")))
    assert len(rows) == 1  # one epoch, one validation (np.trapz shim: validation did not crash)
    map50 = float(rows[0]["     metrics/mAP_0.5"])
    assert 0.0 <= map50 <= 1.0
    # plot threads draw text with a local font (getsize + font shims): the images must all exist
    for plot in ("results.png", "labels.jpg", "train_batch0.jpg", "val_batch0_pred.jpg", "confusion_matrix.png"):
        assert (trained_det / plot).stat().st_size > 0, plot
    assert network_attempts == []


def test_val(trained_det, demo, tmp_path, network_attempts):
    rc = run_task("val", "--weights", trained_det / "weights" / "best.pt", "--data", demo["det_yaml"],
                  "--imgsz", IMGSZ, "--device", "cpu", "--workers", "0", "--project", tmp_path, "--name", "v")
    assert rc == 0
    assert (tmp_path / "v" / "confusion_matrix.png").is_file()
    assert network_attempts == []


def test_detect_images_and_video(trained_det, demo, tmp_path, network_attempts):
    best = trained_det / "weights" / "best.pt"
    common = ["--weights", best, "--imgsz", IMGSZ, "--device", "cpu", "--project", tmp_path]
    assert run_task("detect", *common, "--source", demo["val_images"], "--name", "images") == 0
    written = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert written == sorted(p.name for p in demo["val_images"].iterdir())

    assert run_task("detect", *common, "--source", demo["video"], "--name", "video") == 0
    out = tmp_path / "video" / demo["video"].name
    assert _frames(out) == _frames(demo["video"]) > 0  # every frame annotated and written
    assert network_attempts == []


def test_export_onnx_matches_pytorch_and_detects(trained_det, demo, tmp_path, network_attempts):
    import onnx
    import onnxruntime as ort
    from yolov5.models.experimental import attempt_load

    best = tmp_path / "best.pt"
    best.write_bytes((trained_det / "weights" / "best.pt").read_bytes())
    assert run_task("export", "--weights", best, "--include", "onnx", "--imgsz", IMGSZ) == 0
    onnx_file = best.with_suffix(".onnx")
    model_onnx = onnx.load(str(onnx_file))
    assert max(o.version for o in model_onnx.opset_import if o.domain in ("", "ai.onnx")) >= 16

    model = attempt_load(str(best), device="cpu", fuse=True).eval()
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)[0].numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)

    assert run_task("detect", "--weights", onnx_file, "--source", demo["val_images"] / "*.png", "--imgsz", IMGSZ,
                    "--device", "cpu", "--project", tmp_path, "--name", "onnx") == 0
    assert len(list((tmp_path / "onnx").glob("*.png"))) == len(list(demo["val_images"].iterdir()))
    assert network_attempts == []


def test_export_exits_non_zero_when_a_format_fails(trained_det, tmp_path, monkeypatch, capsys):
    """YOLOv5's try_export swallows failures and exits 0; ours exits 2 and removes the partial file."""
    import onnx

    best = tmp_path / "best.pt"
    best.write_bytes((trained_det / "weights" / "best.pt").read_bytes())

    def broken_check(model):  # export_onnx writes the file, then checks it: fail after the write
        raise onnx.checker.ValidationError("simulated invalid graph")

    monkeypatch.setattr(onnx.checker, "check_model", broken_check)
    assert run_task("export", "--weights", best, "--include", "onnx", "--imgsz", IMGSZ) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --include onnx") and not best.with_suffix(".onnx").exists()


@pytest.mark.parametrize("opset", ["12"])
def test_export_refuses_opset_without_grid_sample(trained_det, tmp_path, capsys, opset):
    best = tmp_path / "best.pt"
    best.write_bytes((trained_det / "weights" / "best.pt").read_bytes())
    assert run_task("export", "--weights", best, "--include", "onnx", "--opset", opset) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: --opset {opset}")
    assert not best.with_suffix(".onnx").exists()


@pytest.mark.parametrize("task", ["train", "val", "detect", "export", "segment-train", "segment-val",
                                  "segment-predict"])
def test_help_lists_yolov5_and_our_flags(task, capsys):
    with pytest.raises(SystemExit) as e:
        run_task(task, "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: scripts/{task.replace('-', '/')}.py" in out
    assert "--weights" in out and "--imgsz" in out and "--trust-checkpoint" in out


@pytest.mark.parametrize("task,args,flag", [
    ("train", ["--cfg", "CFG", "--data", "MISSING.yaml"], "--data"),
    ("train", ["--cfg", "MISSING.yaml", "--data", "DATA"], "--cfg"),
    ("detect", ["--weights", "BEST", "--source", "MISSING.png"], "--source"),
    ("val", ["--weights", "BEST", "--data", "MISSING.yaml"], "--data"),
])
def test_missing_inputs_are_one_line_before_any_output(task, args, flag, trained_det, demo, tmp_path, capsys,
                                                       network_attempts):
    from conftest import DET_CFG
    names = {"CFG": DET_CFG, "DATA": demo["det_yaml"], "BEST": trained_det / "weights" / "best.pt"}
    args = [str(names.get(a, tmp_path / a if a.startswith("MISSING") else a)) for a in args]
    assert run_task(task, *args, "--project", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag} {tmp_path / 'MISSING'}")
    assert not (tmp_path / "runs").exists() and network_attempts == []
