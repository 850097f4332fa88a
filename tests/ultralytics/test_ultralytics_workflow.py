"""The ultralytics workflow offline, with ultralytics' CLI syntax: `scripts/yolo.py <mode> key=value ...`
(= `yolov5-dattn yolo`) for detection, segmentation and RT-DETR, and the Python API after the import.

Each command runs in a fresh Python whose internet sockets are blocked and logged (tests/netguard): the log
must stay empty. n-scale models, imgsz 64, 1 epoch, 8 images.
"""
from pathlib import Path

import pytest

from conftest import REPO, ok, yolo  # udata and trained_u are conftest fixtures

IMGSZ = 64
COMMON = [f"imgsz={IMGSZ}", "device=cpu", "workers=0", "exist_ok=True", "plots=False"]
TRAIN = ["epochs=1", "batch=4", *COMMON]


def test_train_writes_weights_and_results(trained_u):
    assert (trained_u / "weights" / "best.pt").is_file() and (trained_u / "results.csv").is_file()
    import torch
    ckpt = torch.load(trained_u / "weights" / "best.pt", map_location="cpu", weights_only=False)
    from yolov5_dattn.nn.dattention import DAttention
    assert sum(isinstance(m, DAttention) for m in ckpt["model"].modules()) == 2


def test_val_and_predict_images_folder_video(trained_u, udata, tmp_path):
    best, log = trained_u / "weights" / "best.pt", tmp_path / "net.log"
    out = ok(yolo("val", f"model={best}", f"data={udata['det_yaml']}", "batch=4", *COMMON, f"project={tmp_path}",
                  "name=val", cwd=tmp_path, log=log), log)
    assert "all" in out and "mAP50" in out
    image = sorted(Path(udata["val_images"]).glob("*.png"))[0]
    for name, source, expected in (("folder", udata["val_images"], 4), ("image", image, 1),
                                   ("video", udata["video"], 1)):
        # no save=True: as with ultralytics' own `yolo predict`, the command saves by default
        ok(yolo("predict", f"model={best}", f"source={source}", *COMMON, f"project={tmp_path}",
                f"name={name}", cwd=tmp_path, log=log), log)
        assert len([p for p in (tmp_path / name).iterdir() if p.is_file()]) == expected, name


def test_export_onnx_and_openvino_then_predict_with_the_onnx(trained_u, udata, tmp_path):
    best, log = trained_u / "weights" / "best.pt", tmp_path / "net.log"
    ok(yolo("export", f"model={best}", "format=onnx", f"imgsz={IMGSZ}", cwd=tmp_path, log=log), log)
    onnx = best.with_suffix(".onnx")
    assert onnx.is_file() and onnx.stat().st_size > 1e6
    ok(yolo("predict", f"model={onnx}", f"source={udata['val_images']}", "save=True", *COMMON,
            f"project={tmp_path}", "name=onnx", cwd=tmp_path, log=log), log)
    assert len(list((tmp_path / "onnx").glob("*.jpg"))) == 4
    ok(yolo("export", f"model={best}", "format=openvino", f"imgsz={IMGSZ}", cwd=tmp_path, log=log), log)
    assert list((best.parent / "best_openvino_model").glob("*.xml"))


def onnx_outputs(best: Path, cwd: Path, log: Path) -> list:
    """`yolo export format=onnx` of `best`, then the shapes of its outputs on a zero image in onnxruntime."""
    import numpy as np
    import onnxruntime as ort
    ok(yolo("export", f"model={best}", "format=onnx", f"imgsz={IMGSZ}", cwd=cwd, log=log), log)
    session = ort.InferenceSession(str(best.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)
    return [tuple(o.shape) for o in session.run(None, {session.get_inputs()[0].name: image})]


def test_segment_train_predict_and_export(udata, tmp_path):
    log = tmp_path / "net.log"
    ok(yolo("train", f"model={REPO / 'configs/ultralytics/yolo11n-seg-c3k2-dattn.yaml'}", f"data={udata['seg_yaml']}",
            *TRAIN, f"project={tmp_path}", "name=seg", cwd=tmp_path, log=log), log)
    best = tmp_path / "seg" / "weights" / "best.pt"
    out = ok(yolo("predict", f"model={best}", f"source={udata['seg_val_images']}", "save=True", *COMMON,
                  f"project={tmp_path}", "name=segpred", cwd=tmp_path, log=log), log)
    assert len(list((tmp_path / "segpred").glob("*.jpg"))) == 4
    # boxes + mask coefficients (4 + nc + 32 channels) and the 32 mask prototypes at a quarter of imgsz
    assert onnx_outputs(best, tmp_path, log) == [(1, 4 + 3 + 32, 84), (1, 32, IMGSZ // 4, IMGSZ // 4)]


def test_rtdetr_train_predict_and_export(udata, tmp_path):
    log = tmp_path / "net.log"
    out = ok(yolo("train", "model=rtdetr-l-aifi-dattn.yaml", f"data={udata['det_yaml']}", *TRAIN,
                  f"project={tmp_path}", "name=rtdetr", cwd=tmp_path, log=log), log)
    assert "AIFI_DAttention" in out
    best = tmp_path / "rtdetr" / "weights" / "best.pt"
    ok(yolo("predict", f"model={best}", f"source={udata['val_images']}", "save=True", *COMMON,
            f"project={tmp_path}", "name=rtpred", cwd=tmp_path, log=log), log)
    assert len(list((tmp_path / "rtpred").glob("*.jpg"))) == 4
    # box, score, class of the top min(max_det 300, queries x classes): at imgsz 64 the decoder has 8²+4²+2² = 84
    # queries (its 300 capped by the anchors), 3 classes
    assert onnx_outputs(best, tmp_path, log) == [(1, min(300, 84 * 3), 6)]


def test_python_api_after_the_import_and_use_policy(udata, tmp_path, network_attempts, monkeypatch):
    """A library user who opts in to our policy trains offline (the import alone leaves ultralytics' network
    access as it is: test_ultralytics_import_isolation). ultralytics probes DNS when it is imported unless
    YOLO_OFFLINE is set, so an offline user sets it first, as our commands do."""
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    import yolov5_dattn.hosts.ultralytics as host
    host.use_policy()
    from ultralytics import YOLO
    model = YOLO(str(REPO / "configs" / "ultralytics" / "yolov8n-c2f-dattn.yaml"))
    model.train(data=str(udata["det_yaml"]), epochs=1, imgsz=IMGSZ, batch=4, device="cpu", workers=0,
                project=str(tmp_path), name="api", plots=False, verbose=False)
    assert (tmp_path / "api" / "weights" / "best.pt").is_file()
    assert network_attempts == []


@pytest.mark.parametrize("args,names", [
    (["train", "modle=x.yaml"], "'modle' is not a valid YOLO argument"),
    (["train", "model=missing.yaml", "data=x.yaml"], "missing.yaml"),
    (["predict", "model=evil.pt", "source=x.png"], "checkpoint evil.pt was not loaded"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, names, tmp_path):
    import os
    import torch

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)
    torch.save({"model": Evil()}, tmp_path / "evil.pt")  # a checkpoint that runs a command when unpickled
    result = yolo(*args, cwd=tmp_path, log=tmp_path / "net.log")
    assert not (tmp_path / "ran").exists()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: yolov5-dattn yolo: ") and names in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
