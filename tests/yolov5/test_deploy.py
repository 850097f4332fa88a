"""Deployment: the exported model runs where users run it, at the sizes they run it at.

A `yolov5n_c3_dattn` (random init; the exports must reproduce PyTorch's forward whatever the weights) goes
through `scripts/export.py`'s runner and then into the real runtimes: onnxruntime and OpenVINO for a `--dynamic`
ONNX export (batch 1 and 2 at 160×160, 224×288 and 320×320), OpenCV's DNN module for a static one, OpenVINO's
own folder format for detect/val. Every other `--include` format cannot run here and must be refused up front.
"""
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

from conftest import DET_CFG, run_task
from yolov5_dattn.hosts.yolov5.deploy import import_openvino

EXPORT_IMGSZ = 160
SHAPES = [(b, h, w) for b in (1, 2) for h, w in ((160, 160), (224, 288), (320, 320))]
# every other format of export_formats() is refused here (tflite and coreml: ours, tests/cli/test_deploy_tflite.py
# and test_deploy_coreml.py)
WORK_HERE = ("torchscript", "onnx", "openvino", "tflite", "coreml")
TOL = 1e-3


@pytest.fixture(scope="module")
def checkpoint(demo, tmp_path_factory):
    """A random-init yolov5n_c3_dattn checkpoint (classes of the demo data), as YOLOv5 saves one."""
    from yolov5.models.yolo import Model
    torch.manual_seed(0)
    model = Model(str(DET_CFG), ch=3, nc=len(demo["names"])).eval()
    model.names = dict(enumerate(demo["names"]))
    path = tmp_path_factory.mktemp("deploy") / "best.pt"
    torch.save({"model": model, "epoch": -1}, path)
    return path


@pytest.fixture(scope="module")
def pytorch(checkpoint):
    """The checkpoint as the exporter sees it (fused, eval): input (B, 3, H, W) -> raw output (B, N, 5 + nc)."""
    from yolov5.models.experimental import attempt_load
    model = attempt_load(str(checkpoint), device="cpu", fuse=True).eval()

    def forward(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x)[0].numpy()
    return forward


def _copy(checkpoint, folder):
    path = folder / checkpoint.name
    path.write_bytes(checkpoint.read_bytes())
    return path


def _export(weights, *args):
    return run_task("export", "--weights", weights, "--imgsz", EXPORT_IMGSZ, "--device", "cpu", *args)


def _image(b, h, w, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _attention_nodes(graph):
    return [n for n in graph.node if "/attention/" in n.name]


def _constants(graph):
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            values[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    return values


def assert_float32(graph):
    """No float64 anywhere in the graph (OpenCV's DNN refuses a graph that mixes it with float32)."""
    double = onnx.TensorProto.DOUBLE
    assert not [i.name for i in graph.initializer if i.data_type == double]
    for n in graph.node:
        for a in n.attribute:
            assert not (n.op_type == "Cast" and a.name == "to" and a.i == double), n.name
            assert not (a.type == onnx.AttributeProto.TENSOR and a.t.data_type == double), n.name


def assert_shape_derived(graph):
    """No reshape/expand in DAttention with a fixed target size (what a --dynamic export must not have)."""
    constants = _constants(graph)
    shaped = [n for n in _attention_nodes(graph) if n.op_type in ("Reshape", "Expand")]
    assert shaped  # the attention layer is in the graph under that name
    for n in shaped:
        target = constants.get(n.input[1])
        # a constant target of only 1s and -1s (a scalar made 1-D) fixes no size; anything else would
        assert target is None or set(target.ravel().tolist()) <= {1, -1}, (n.name, target)
    assert any(n.op_type == "GridSample" for n in _attention_nodes(graph))


def test_dynamic_onnx_runs_at_every_size_in_onnxruntime_and_openvino(checkpoint, pytorch, tmp_path,
                                                                      network_attempts):
    import onnxruntime as ort
    ov = import_openvino()  # telemetry off

    weights = _copy(checkpoint, tmp_path)
    assert _export(weights, "--include", "onnx", "--dynamic") == 0
    path = weights.with_suffix(".onnx")
    graph = onnx.load(str(path)).graph
    assert_float32(graph)
    assert_shape_derived(graph)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for b, h, w in SHAPES:
        x = _image(b, h, w)
        expected = pytorch(x)
        assert expected.shape[:2] == (b, 3 * sum((h // s) * (w // s) for s in (8, 16, 32)))
        for runtime, got in (("onnxruntime", session.run(None, {"images": x.numpy()})[0]),
                             ("openvino", compiled(x.numpy())[0])):
            assert got.shape == expected.shape, (runtime, b, h, w)
            diff = float(np.abs(got - expected).max())
            assert diff <= TOL, f"{runtime} at batch {b}, {h}x{w}: max abs diff {diff}"
    assert network_attempts == []


def test_static_onnx_runs_in_opencv_dnn(checkpoint, pytorch, tmp_path):
    assert int(cv2.__version__.split(".")[0]) >= 5  # 4.x has no GridSample (README)
    weights = _copy(checkpoint, tmp_path)
    assert _export(weights, "--include", "onnx") == 0
    path = weights.with_suffix(".onnx")
    assert_float32(onnx.load(str(path)).graph)
    net = cv2.dnn.readNetFromONNX(str(path))
    x = _image(1, EXPORT_IMGSZ, EXPORT_IMGSZ, seed=1)
    net.setInput(x.numpy())
    got, expected = net.forward(), pytorch(x)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= TOL


def test_openvino_folder_matches_pytorch_and_runs_detect_and_val(checkpoint, pytorch, demo, tmp_path,
                                                                   network_attempts, monkeypatch):
    import yaml

    weights = _copy(checkpoint, tmp_path)
    # OpenVINO's opt-out telemetry would send usage events: the export never starts it, whoever imported
    # openvino first in this process
    import openvino_telemetry
    started = []
    monkeypatch.setattr(openvino_telemetry.Telemetry, "__init__",
                        lambda self, *a, **k: started.append("Telemetry()"), raising=True)
    for name in ("init", "start_session", "send_event", "end_session", "force_shutdown"):
        monkeypatch.setattr(openvino_telemetry.Telemetry, name, lambda self, *a, _n=name, **k: started.append(_n))
    assert _export(weights, "--include", "openvino") == 0
    assert started == []
    ov = import_openvino()
    folder = tmp_path / "best_openvino_model"
    assert sorted(p.name for p in folder.iterdir()) == ["best.bin", "best.xml", "best.yaml"]
    assert yaml.safe_load((folder / "best.yaml").read_text()) == {"stride": 32, "names": dict(enumerate(demo["names"]))}
    assert not list(tmp_path.glob(".best_openvino_model*"))  # no temp folder left
    assert 'element_type="f16"' not in (folder / "best.xml").read_text()  # fp32 by default

    x = _image(1, EXPORT_IMGSZ, EXPORT_IMGSZ, seed=2)
    compiled = ov.Core().compile_model(str(folder / "best.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert float(np.abs(compiled(x.numpy())[0] - pytorch(x)).max()) <= TOL

    common = ["--weights", folder, "--imgsz", EXPORT_IMGSZ, "--device", "cpu", "--project", tmp_path]
    assert run_task("detect", *common, "--source", demo["val_images"], "--name", "detect") == 0
    assert sorted(p.name for p in (tmp_path / "detect").iterdir()) == sorted(p.name for p in
                                                                           demo["val_images"].iterdir())
    assert run_task("val", *common, "--data", demo["det_yaml"], "--workers", "0", "--name", "val") == 0
    assert (tmp_path / "val" / "confusion_matrix.png").is_file()
    assert network_attempts == []


def test_openvino_half_stores_fp16_weights(checkpoint, pytorch, tmp_path):
    ov = import_openvino()  # telemetry off

    weights = _copy(checkpoint, tmp_path)
    assert _export(weights, "--include", "openvino", "--half") == 0  # on CPU: YOLOv5 allows --half only on GPU
    folder = tmp_path / "best_openvino_model"
    assert 'element_type="f16"' in (folder / "best.xml").read_text()
    # the fp32 ONNX file it was converted from holds the same weights in twice the bytes
    assert (folder / "best.bin").stat().st_size < 0.6 * weights.with_suffix(".onnx").stat().st_size
    x = _image(1, EXPORT_IMGSZ, EXPORT_IMGSZ, seed=3)
    compiled = ov.Core().compile_model(str(folder / "best.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got, expected = compiled(x.numpy())[0], pytorch(x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # fp16 weights: boxes (pixels, up to ~300) within a pixel, not bit-equal
    assert 0 < float(np.abs(got - expected).max()) < 1.0


def _export_formats():
    import yolov5_dattn  # noqa: F401  (compat first)
    from yolov5.export import export_formats
    return [f for f in export_formats()["Argument"] if f != "-"]


@pytest.mark.parametrize("fmt", [f for f in _export_formats() if f not in WORK_HERE])
def test_unavailable_format_is_refused_before_anything_runs(fmt, checkpoint, tmp_path, capsys, monkeypatch,
                                                             network_attempts):
    """rc 2, one `error: --include <fmt> ...` line naming what is missing, no file, no process started."""
    started = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: started.append(a) or pytest.fail(f"ran {a}"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail(f"started {a}"))
    weights = _copy(checkpoint, tmp_path)
    assert _export(weights, "--include", fmt) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --include {fmt}"), err
    expected = {"engine": "CUDA", "paddle": "paddlepaddle"}.get(fmt, "tensorflow")
    assert expected in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert started == [] and network_attempts == []


def test_formats_that_work_here_are_not_refused():
    """The other side of the parametrised refusal test: these are exported by the tests above (tflite and coreml
    by tests/cli/test_deploy_tflite.py and test_deploy_coreml.py)."""
    from argparse import Namespace

    from yolov5_dattn.hosts.yolov5.deploy import refusal
    for fmt in WORK_HERE:
        assert refusal(fmt, Namespace(device="cpu"), has_dattention=True) is None


def test_export_run_defaults_to_opset_17(checkpoint, tmp_path):
    """yolov5's export.run() says opset 12 (no grid_sample); through our shims it is 17 unless told."""
    from yolov5 import export

    from yolov5_dattn.hosts.yolov5 import compat
    compat.apply_entrypoints()
    weights = _copy(checkpoint, tmp_path)
    written = export.run(weights=str(weights), include=["onnx"], imgsz=[64], device="cpu")
    assert written == [str(weights.with_suffix(".onnx"))]
    model = onnx.load(str(weights.with_suffix(".onnx")))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17


def test_tensorrt_onnx_step_uses_the_runs_opset(monkeypatch, tmp_path):
    """YOLOv5's export_engine hard-codes opset 12 for its ONNX step; ours passes the run's (>= 16)."""
    import types

    from yolov5 import export

    from yolov5_dattn.hosts.yolov5 import compat
    compat.apply_entrypoints()
    asked = []
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    monkeypatch.setattr(export, "export_onnx", lambda model, im, file, opset, *a, **k: asked.append(opset))
    im = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"))
    # stops after the ONNX step (no .onnx written, no TensorRT): YOLOv5 logs the failure and returns None
    assert export.export_engine(None, im, tmp_path / "m.pt", False, False, False) == (None, None)
    assert asked == [17]


def test_failed_openvino_export_leaves_nothing(checkpoint, tmp_path, capsys, monkeypatch):
    """A conversion that fails: rc 2, one error line, neither the folder nor the intermediate .onnx left."""
    from yolov5_dattn.hosts.yolov5 import deploy

    def broken(*args, **kwargs):
        raise RuntimeError("simulated conversion failure")

    monkeypatch.setattr(deploy, "convert_to_openvino", broken)
    weights = _copy(checkpoint, tmp_path)
    assert _export(weights, "--include", "openvino") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --include openvino")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
