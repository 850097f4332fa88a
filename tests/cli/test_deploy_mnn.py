"""MNN on both hosts, checked with MNN's own converter and runtime (the `edge` extra's `MNN` package).

- DAttention with the Gather sampler, through ONNX and MNN's converter, equals PyTorch's forward (which uses
  `grid_sample`) within 1e-4 at batch 1 and 2, a square and a non-square map, from one dynamic export;
- `yolov5-dattn export --include mnn --dynamic` (ours: YOLOv5 7.0.14 has no MNN export) and
  `yolov5-dattn yolo export format=mnn dynamic=True` write a .mnn whose output follows PyTorch's at batch 1 and 2,
  64×64 and 64×96; ultralytics' own loader (`AutoBackend`, `predict`, `val`) runs it;
- exporting never runs MNN's logger, which on import would `pip install` a package and ask Alibaba Cloud for
  upload credentials (the control: a plain `import MNN.tools.mnnconvert` does try to pip install).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from calibrated_models import assert_varies, copy_into
from conftest import NETGUARD, REPO, run_task, run_yolo
from yolov5_dattn.nn import DAttention
from yolov5_dattn.nn.sampler_switch import sampler, sampler_set_to

SHAPES = ((1, 64, 64), (2, 64, 96), (1, 64, 96), (2, 64, 64))  # (batch, h, w), one export each host
# MNN's fp32 CPU kernels against PyTorch on a whole random-weight network, relative above 1 (boxes are pixels).
# Random weights amplify rounding layer after layer (onnxruntime: up to 8e-4 on the same model), MNN's kernels
# round more (the stock yolov5n / yolo11n, without DAttention: up to 4e-3); DAttention alone is held to 1e-4
# below, and a trained model's mAP after export is in docs/deploy.md
MNN_TOL = 2e-2


def _mnn_net(path: Path):
    import MNN
    rt = MNN.nn.create_runtime_manager(({"precision": "high", "backend": "CPU", "numThread": 1},))
    return MNN.nn.load_module_from_file(str(path), [], [], runtime_manager=rt, rearrange=True)


def _mnn_run(net, x: torch.Tensor) -> np.ndarray:
    """MNN's first output of `net` for `x` (B, C, H, W), as an NCHW array."""
    import MNN
    image = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    out = net.onForward([MNN.expr.const(image, list(image.shape), MNN.expr.NCHW)])[0]
    return np.array(MNN.expr.convert(out, MNN.expr.NCHW).read())


def _images(b, h, w, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _worst(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max())


def test_dattention_with_the_gather_sampler_runs_in_mnn(tmp_path):
    import onnx
    from yolov5_dattn.mnn_convert import onnx_to_mnn
    torch.manual_seed(0)
    module = DAttention(32, (8, 8), n_heads=4, n_groups=2).eval()
    onnx_file = tmp_path / "attention.onnx"
    with sampler_set_to("gather"), torch.no_grad():
        torch.onnx.export(module, torch.randn(1, 32, 8, 8), str(onnx_file), opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
    assert "GridSample" not in {n.op_type for n in onnx.load(str(onnx_file)).graph.node}
    out = onnx_to_mnn(onnx_file, tmp_path / "attention.mnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.mnn", "attention.onnx"]
    net = _mnn_net(out)
    # maps one pixel high and one wide too (MNN runs batch 2 of a 1-pixel-high map 0.13 off with either sampler,
    # grid_sample's GridSample too: docs/deploy.md)
    for b, h, w in ((1, 8, 8), (2, 8, 12), (1, 1, 5), (2, 5, 1)):
        x = torch.randn(b, 32, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = module(x).numpy()  # grid_sample
        diff = float(np.abs(_mnn_run(net, x) - expected).max())
        print(f"DAttention in MNN {b}x{h}x{w}: max abs {diff:.1e}")
        assert diff <= 1e-4, (b, h, w, diff)


# ---- YOLOv5 ------------------------------------------------------------------------------------------------------
def test_yolov5_mnn_export_runs_in_mnn(calibrated_yolov5, tmp_path):
    import MNN
    checkpoint, pytorch = calibrated_yolov5
    weights = copy_into(checkpoint, tmp_path)
    assert run_task("export", "--weights", weights, "--imgsz", 64, 96, "--device", "cpu", "--include", "mnn",
                    "--dynamic") == 0
    assert sampler() == "grid_sample"  # the export's Gather sampler was for its run only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.mnn", "best.pt"]  # no ONNX left, no temp file
    net = _mnn_net(tmp_path / "best.mnn")
    meta = json.loads(net.get_info()["bizCode"])
    assert meta["stride"] == 32 and meta["imgsz"] == [64, 96] and meta["names"] == {"0": "0", "1": "1", "2": "2"}
    assert MNN.version().startswith("3.")
    for b, h, w in SHAPES:
        x = _images(b, h, w, seed=b * h + w)
        expected = pytorch(x)
        worst = _worst(_mnn_run(net, x), expected)
        print(f"yolov5 mnn {b}x{h}x{w}: worst {worst:.2e}, max abs {np.abs(_mnn_run(net, x) - expected).max():.2e}")
        assert worst <= MNN_TOL, (b, h, w, worst)
    assert_varies(pytorch, 2, 64, 96)


# ---- ultralytics -------------------------------------------------------------------------------------------------
def test_ultralytics_mnn_export_runs_in_mnn_and_autobackend(calibrated_ultralytics, udata, tmp_path):
    import onnx
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    checkpoint, pytorch = calibrated_ultralytics
    weights = copy_into(checkpoint, tmp_path)
    assert run_yolo("export", f"model={weights}", "format=mnn", "imgsz=[64,96]", "dynamic=True") == 0
    assert sampler() == "grid_sample"
    # ultralytics keeps the ONNX file it converted from: the Gather sampler's graph
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.mnn", "u.onnx", "u.pt"]
    assert "GridSample" not in {n.op_type for n in onnx.load(str(tmp_path / "u.onnx")).graph.node}
    net = _mnn_net(tmp_path / "u.mnn")
    for b, h, w in SHAPES:
        x = _images(b, h, w, seed=b * h * w)
        expected = pytorch(x)
        worst = _worst(_mnn_run(net, x), expected)
        print(f"ultralytics mnn {b}x{h}x{w}: worst {worst:.2e}, max abs "
              f"{np.abs(_mnn_run(net, x) - expected).max():.2e}")
        assert worst <= MNN_TOL, (b, h, w, worst)
    assert_varies(pytorch, 1, 64, 96)
    # the host's own loader, at batch 1 and 2
    backend = AutoBackend(str(tmp_path / "u.mnn"), device=torch.device("cpu"))
    for b in (1, 2):
        x = _images(b, 64, 96, seed=b)
        out = backend(x)
        worst = _worst(np.asarray(out[0] if isinstance(out, (list, tuple)) else out), pytorch(x))
        print(f"ultralytics mnn AutoBackend {b}x64x96: worst {worst:.2e}")
        assert worst <= MNN_TOL, (b, worst)
    model = YOLO(str(tmp_path / "u.mnn"), task="detect")
    bus = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
    results = model.predict(str(bus), imgsz=[64, 96], conf=0.0, save=False)
    assert len(results) == 1 and results[0].orig_shape == (1080, 810) and len(results[0].boxes) > 0
    metrics = model.val(data=str(udata["det_yaml"]), imgsz=64, batch=2, project=str(tmp_path / "runs"),
                        plots=False)
    assert 0.0 <= metrics.box.map50 <= 1.0 and metrics.speed["inference"] > 0  # val ran the MNN model


# ---- no run-time install, no upload ------------------------------------------------------------------------------
_RECORD_SYSTEM = """
import os, sys
marker = sys.argv[1]
def system(command):  # what MNN's logger would run; recorded instead of run
    with open(marker, "a") as f:
        f.write(command + "\\n")
    return 0
os.system = system
"""


def _fresh(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NETGUARD_LOG": str(tmp_path / "net.log"),
           "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(REPO), str(REPO / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _RECORD_SYSTEM + code, str(tmp_path / "system.txt")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


def test_exports_never_run_mnns_logger(calibrated_yolov5, calibrated_ultralytics, tmp_path):
    v5 = copy_into(calibrated_yolov5[0], tmp_path)
    u = copy_into(calibrated_ultralytics[0], tmp_path)
    result = _fresh(
        "from yolov5_dattn.cli import main\n"
        f"assert main(['export', '--weights', {str(v5)!r}, '--include', 'mnn', '--imgsz', '64']) == 0\n"
        f"assert main(['yolo', 'export', 'model={u}', 'format=mnn', 'imgsz=64']) == 0\n"
        "assert sys.modules.get('MNN.tools.utils.log') is None\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "best.mnn").is_file() and (tmp_path / "u.mnn").is_file()
    assert not (tmp_path / "system.txt").exists(), (tmp_path / "system.txt").read_text()
    assert not (tmp_path / "net.log").exists(), (tmp_path / "net.log").read_text()
    # the control: MNN's tools imported as MNN ships them run pip from their logger
    result = _fresh("import MNN.tools.mnnconvert\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install -U aliyun-log-python-sdk" in (tmp_path / "system.txt").read_text()
