"""LiteRT (TFLite) on both hosts, converted by `litert-torch` and run by `ai-edge-litert` (the `edge` extra).

- DAttention with the Gather sampler, dense and sparse, converted alone, equals PyTorch's forward (`grid_sample`)
  within 1e-5, maps one pixel wide and high included;
- `yolov5-dattn export --include tflite` writes `best-fp32.tflite` with YOLOv5's TensorFlow conventions (NHWC in,
  normalised xywh out, stride and names inside); its output follows PyTorch's at batch 1 (64×96, 64×64) and
  batch 2 (96×64), and YOLOv5's own `detect` and `val` run it (`DetectMultiBackend`, with ai-edge-litert standing in for
  tflite_runtime during the run only);
- `yolov5-dattn yolo export format=litert` (and its old name `format=tflite`) writes a `.tflite` that ultralytics'
  `AutoBackend`, `predict` and `val` run, following PyTorch's output.
"""
import ast
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from calibrated_models import assert_varies, copy_into, export_copy
from conftest import run_task, run_yolo
from yolov5_dattn.nn import DAttention
from yolov5_dattn.nn.sampler_switch import sampler, sampler_set_to

# relative above 1 (boxes are pixels), as the other whole-model checks, with LiteRT's builtin fp32 kernels. Random
# weights amplify rounding layer by layer (onnxruntime: up to 8e-4 on the same models); DAttention alone is held
# to 1e-5 below
TOL = 1e-3
# yolo11n-c3k2-dattn amplifies rounding far more at its P5 boxes (DFL logits times stride 32 on a 3x2 map): at 96x64
# its PyTorch output itself moves by 1.7e-3 between the two bilinear samplers, which agree within 2.4e-7. Measured
# against PyTorch: builtin kernels 4.5e-4 (64x96) and 7.2e-3 (96x64, all at P5); with XNNPACK, the CPU delegate
# LiteRT applies by default (so AutoBackend runs it), 1.5e-3 and 8.3e-3. Held to MNN's whole-model tolerance
U_TOL = 2e-2


def _images(b, h, w, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _worst(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max())


def _litert(path: Path, x: np.ndarray) -> list:
    """Every output of the LiteRT model at `path` for input `x`, computed by LiteRT's builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    assert tuple(inp["shape"]) == x.shape, (inp["shape"], x.shape)
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


# ---- DAttention alone ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_dattention_in_litert_equals_pytorch(ratio, tmp_path):
    import litert_torch
    torch.manual_seed(0)
    module = DAttention(32, (8, 8), n_heads=4, n_groups=2, query_ratio=ratio).eval()
    shapes = ((1, 8, 12), (2, 8, 8), (1, 1, 5)) if ratio == 1.0 else ((2, 8, 12),)
    for b, h, w in shapes:
        x = torch.randn(b, 32, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            expected = module(x).numpy()  # grid_sample
            with sampler_set_to("gather"):
                litert_torch.convert(module, (x,)).export(str(tmp_path / "attention.tflite"))
        diff = float(np.abs(_litert(tmp_path / "attention.tflite", x.numpy())[0] - expected).max())
        print(f"DAttention (query_ratio {ratio}) in LiteRT {b}x{h}x{w}: max abs {diff:.1e}")
        assert diff <= 1e-5, (b, h, w, diff)


# ---- YOLOv5 ------------------------------------------------------------------------------------------------------
def test_yolov5_tflite_export_runs_in_litert_and_detect(calibrated_yolov5, demo, tmp_path):
    checkpoint, pytorch = calibrated_yolov5
    for b, h, w in ((1, 64, 96), (2, 96, 64), (1, 64, 64)):  # the last for val, which runs exports square
        folder = export_copy(checkpoint, tmp_path / f"{b}x{h}x{w}", "--imgsz", h, w, "--batch-size", b,
                             "--include", "tflite")
        assert sorted(p.name for p in folder.iterdir()) == ["best-fp32.tflite", "best.pt"]  # no temp file
        model = folder / "best-fp32.tflite"
        with zipfile.ZipFile(model) as zf:  # where DetectMultiBackend reads stride and names
            meta = ast.literal_eval(zf.read(zf.namelist()[0]).decode())
        assert meta == {"stride": 32, "names": {0: "0", 1: "1", 2: "2"}}
        x = _images(b, h, w, seed=b * h + w)
        expected = pytorch(x)
        got = _litert(model, x.permute(0, 2, 3, 1).numpy())[0]  # NHWC in
        got[..., :4] *= [w, h, w, h]  # normalised xywh out, as YOLOv5's TensorFlow formats
        worst = _worst(got, expected)
        print(f"yolov5 litert {b}x{h}x{w}: worst {worst:.2e}, max abs {np.abs(got - expected).max():.2e}")
        assert worst <= TOL, (b, h, w, worst)
    assert_varies(pytorch, 1, 64, 96)

    # YOLOv5's own detect and val load it (DetectMultiBackend: batch 1, the export's size)
    model = tmp_path / "1x64x96" / "best-fp32.tflite"
    project = tmp_path / "runs"
    assert run_task("detect", "--weights", model, "--source", demo["val_images"], "--imgsz", 64, 96, "--device",
                    "cpu", "--project", project, "--name", "detect", "--save-txt", "--conf-thres", 0.0) == 0
    images = sorted(Path(demo["val_images"]).glob("*.png"))
    assert sorted(p.name for p in (project / "detect").glob("*.png")) == [p.name for p in images]
    assert len(list((project / "detect" / "labels").glob("*.txt"))) == len(images)
    assert "tflite_runtime" not in sys.modules and "tflite_runtime.interpreter" not in sys.modules  # run only
    assert run_task("val", "--weights", tmp_path / "1x64x64" / "best-fp32.tflite", "--data", demo["det_yaml"],
                    "--imgsz", 64, "--device", "cpu", "--batch-size", 1, "--project", project, "--name", "val") == 0
    assert (project / "val").is_dir()


# ---- ultralytics -------------------------------------------------------------------------------------------------
def test_ultralytics_litert_export_runs_in_autobackend(calibrated_ultralytics, udata, tmp_path):
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    checkpoint, pytorch = calibrated_ultralytics
    for fmt, (h, w) in (("litert", (64, 96)), ("tflite", (96, 64))):  # tflite: ultralytics' old name, same export
        folder = tmp_path / fmt
        folder.mkdir()
        weights = copy_into(checkpoint, folder)
        assert run_yolo("export", f"model={weights}", f"format={fmt}", f"imgsz=[{h},{w}]") == 0
        assert sampler() == "grid_sample"
        assert sorted(p.name for p in folder.iterdir()) == ["u.pt", "u.tflite"]
        x = _images(1, h, w, seed=h)
        expected = pytorch(x)
        got = _litert(folder / "u.tflite", x.numpy())[0]  # NCHW in; boxes divided by the size (ultralytics' LiteRT)
        got[:, [0, 2]] *= w
        got[:, [1, 3]] *= h
        worst = _worst(got, expected)
        print(f"ultralytics litert 1x{h}x{w}: worst {worst:.2e}")
        assert worst <= U_TOL, (fmt, worst)
        # the host's own loader (XNNPACK)
        backend = AutoBackend(str(folder / "u.tflite"), device=torch.device("cpu"))
        out = backend(x)
        worst = _worst(np.asarray(out[0] if isinstance(out, (list, tuple)) else out), expected)
        print(f"ultralytics litert AutoBackend 1x{h}x{w}: worst {worst:.2e}")
        assert worst <= U_TOL, (fmt, worst)
    assert_varies(pytorch, 1, 64, 96)
    model = YOLO(str(tmp_path / "litert" / "u.tflite"), task="detect")
    bus = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
    results = model.predict(str(bus), imgsz=[64, 96], conf=0.0, save=False)
    assert len(results) == 1 and results[0].orig_shape == (1080, 810) and len(results[0].boxes) > 0
    metrics = model.val(data=str(udata["det_yaml"]), imgsz=[64, 96], batch=1, project=str(tmp_path / "runs"),
                        plots=False)
    assert 0.0 <= metrics.box.map50 <= 1.0 and metrics.speed["inference"] > 0  # val ran the LiteRT model
