"""Deployment formats beyond ONNX / OpenVINO, each checked with the real converter and runtime (the `edge` extra).

- NCNN, both hosts: `yolov5-dattn export --include ncnn` (ours: YOLOv5 7.0.14 has none) and
  `yolov5-dattn yolo export format=ncnn` write a folder whose every layer NCNN knows (GridSample included), and
  NCNN's runtime matches PyTorch's raw output within 1e-3 (relative above 1: boxes are pixels) at a square and a
  non-square size; ultralytics' own loader (`AutoBackend`, `YOLO(folder).predict`) runs it;
- OpenVINO int8 (ultralytics, NNCF post-training quantization on the user's images): written offline, quantized,
  run by AutoBackend;
- a format whose converter is missing is refused before any work: one `error:` line naming
  `pip install "yolov5-dattn[edge]"`, exit 2, nothing written (the module made unimportable in a fresh Python).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calibrated_models import assert_varies, copy_into
from conftest import REPO, run_task, run_yolo
from yolov5_dattn.nn import DAttention
from yolov5_dattn.nn.ncnn_forms import ncnn_forms
from yolov5_dattn.nn.sampler_switch import sampler

TOL = 1e-3  # an exported model against PyTorch, fp32, relative above 1
NCNN_DEFAULT_TOL = 3e-3  # NCNN with its default options (AutoBackend's), which trade precision for speed
NCNN_FP32_OFF = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                 "use_winograd_convolution", "use_sgemm_convolution")
SIZES = ((64, 64), (64, 96))  # (h, w), the second not square
EDGE = 'pip install "yolov5-dattn[edge]"'


def _images(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _worst(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max())


def _ncnn_run(folder: Path, x: torch.Tensor) -> np.ndarray:
    """NCNN's output of the exported folder for image batch `x` (1, 3, h, w): (1, ...)."""
    import ncnn
    net = ncnn.Net()
    for option in NCNN_FP32_OFF:  # fp32 throughout (by default NCNN may store in fp16 / bf16 where the CPU can)
        setattr(net.opt, option, False)
    assert net.load_param(str(folder / "model.ncnn.param")) == 0
    assert net.load_model(str(folder / "model.ncnn.bin")) == 0
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x[0].numpy()).clone())
    rc, out = ex.extract("out0")
    assert rc == 0
    return np.array(out)[None]


def _ncnn_layers(folder: Path) -> set:
    lines = (folder / "model.ncnn.param").read_text().splitlines()[2:]  # magic, counts, then one layer a line
    return {line.split()[0] for line in lines if line.strip()}


def assert_ncnn_folder(folder: Path):
    import ncnn
    names = {p.name for p in folder.iterdir()}  # ultralytics keeps pnnx's example script, model_ncnn.py
    assert {"metadata.yaml", "model.ncnn.bin", "model.ncnn.param"} <= names <= {
        "metadata.yaml", "model.ncnn.bin", "model.ncnn.param", "model_ncnn.py"}, names
    layers = _ncnn_layers(folder)
    unknown = sorted(t for t in layers if ncnn.layer_to_index(t) < 0)
    assert not unknown, unknown  # pnnx leaves an op it cannot convert under its torch name
    assert "GridSample" in layers and "MatMul" in layers


# ---- the trace forms ---------------------------------------------------------------------------------------------
def test_ncnn_forms_compute_the_same_numbers():
    torch.manual_seed(0)
    module = DAttention(32, (8, 8), n_heads=4, n_groups=2).eval()
    x = torch.randn(2, 32, 8, 12)
    with torch.no_grad():
        expected = module(x)
        with ncnn_forms():
            got = module(x)
    assert float((got - expected).abs().max()) <= 1e-5
    a, b, bias = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    with ncnn_forms():
        assert torch.allclose(torch.baddbmm(bias, a, b), bias + a @ b, atol=1e-6)
        assert torch.equal(torch.ones(1, 3).expand_as(torch.zeros(2, 3)), torch.ones(2, 3))


# ---- YOLOv5 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", SIZES)
def test_yolov5_ncnn_export_runs_in_ncnn(calibrated_yolov5, h, w, tmp_path):
    checkpoint, pytorch = calibrated_yolov5
    weights = copy_into(checkpoint, tmp_path)
    assert run_task("export", "--weights", weights, "--imgsz", h, w, "--device", "cpu", "--include", "ncnn") == 0
    assert sampler() == "grid_sample"
    folder = tmp_path / "best_ncnn_model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best_ncnn_model"]
    assert_ncnn_folder(folder)
    assert_varies(pytorch, 1, h, w)
    x = _images(h, w, seed=h + w)
    worst = _worst(_ncnn_run(folder, x), pytorch(x))
    print(f"yolov5 ncnn {h}x{w}: worst {worst:.2e}, max abs {np.abs(_ncnn_run(folder, x) - pytorch(x)).max():.2e}")
    assert worst <= TOL, worst
    import yaml
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["imgsz"] == [h, w] and meta["stride"] == 32 and meta["names"] == {0: "0", 1: "1", 2: "2"}


def test_yolov5_ncnn_with_gather_sampler_is_refused(calibrated_yolov5, tmp_path, capsys):
    weights = copy_into(calibrated_yolov5[0], tmp_path)
    assert run_task("export", "--weights", weights, "--include", "ncnn", "--sampler", "gather") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --sampler gather: NCNN has no layer"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


# ---- ultralytics -------------------------------------------------------------------------------------------------
def test_ultralytics_ncnn_export_runs_in_ncnn_and_autobackend(calibrated_ultralytics, tmp_path):
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    checkpoint, pytorch = calibrated_ultralytics
    for h, w in SIZES:
        work = tmp_path / f"{h}x{w}"
        work.mkdir()
        weights = copy_into(checkpoint, work)
        assert run_yolo("export", f"model={weights}", "format=ncnn", f"imgsz=[{h},{w}]") == 0
        assert sampler() == "grid_sample"
        folder = work / "u_ncnn_model"
        assert sorted(p.name for p in work.iterdir()) == ["u.pt", "u_ncnn_model"]  # no staging or pnnx scratch
        assert_ncnn_folder(folder)
        assert_varies(pytorch, 1, h, w)
        x = _images(h, w, seed=h * w)
        expected = pytorch(x)
        worst = _worst(_ncnn_run(folder, x), expected)
        print(f"ultralytics ncnn {h}x{w}: worst {worst:.2e}, max abs "
              f"{np.abs(_ncnn_run(folder, x) - expected).max():.2e}")
        assert worst <= TOL, (h, w, worst)
        # the host's own loader
        backend = AutoBackend(str(folder), device=torch.device("cpu"))
        out = backend(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        worst = _worst(np.asarray(out), expected)
        print(f"ultralytics ncnn AutoBackend {h}x{w}: worst {worst:.2e}")
        assert worst <= NCNN_DEFAULT_TOL, (h, w, worst)
    bus = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
    results = YOLO(str(folder), task="detect").predict(str(bus), imgsz=[64, 96], conf=0.0, save=False)
    assert len(results) == 1 and results[0].orig_shape == (1080, 810) and len(results[0].boxes) > 0


def test_ultralytics_ncnn_with_gather_sampler_is_refused(calibrated_ultralytics, tmp_path, capsys):
    weights = copy_into(calibrated_ultralytics[0], tmp_path)
    assert run_yolo("export", f"model={weights}", "format=ncnn", "sampler=gather") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sampler=gather: NCNN has no layer" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt"]


# ---- a missing converter -----------------------------------------------------------------------------------------
def _without(modules, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where `modules` cannot be imported (sys.modules entries set to None)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("host,fmt,missing,extra", [
    ("yolov5", "ncnn", ["pnnx"], []),
    ("yolov5", "ncnn", ["pnnx", "ncnn"], []),
    ("ultralytics", "ncnn", ["ncnn"], []),
    ("ultralytics", "openvino", ["nncf"], ["quantize=8"]),
    ("yolov5", "mnn", ["MNN"], []),
    ("ultralytics", "mnn", ["MNN"], []),
    ("yolov5", "tflite", ["litert_torch"], []),
    ("ultralytics", "litert", ["litert_torch", "ai_edge_litert"], []),
    ("ultralytics", "tflite", ["ai_edge_litert"], []),
    ("yolov5", "coreml", ["coremltools"], []),
    ("ultralytics", "coreml", ["coremltools"], []),
])
def test_a_missing_converter_is_refused_before_any_work(host, fmt, missing, extra, calibrated_yolov5, calibrated_ultralytics,
                                                        tmp_path):
    if host == "yolov5":
        weights = copy_into(calibrated_yolov5[0], tmp_path)
        code = ("from yolov5_dattn.cli import main\n"
                f"sys.exit(main(['export', '--weights', {str(weights)!r}, '--include', {fmt!r}]))")
    else:
        weights = copy_into(calibrated_ultralytics[0], tmp_path)
        code = ("from yolov5_dattn.cli import main\n"
                f"sys.exit(main(['yolo', 'export', 'model={weights}', 'format={fmt}', 'imgsz=64', *{extra!r}]))")
    result = _without(missing, code, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and EDGE in err[0], err
    assert " and ".join(m.replace("_", "-") for m in missing) in err[0]  # the pip names
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.name]  # nothing exported, no run folder
    # the control: with the modules importable the same command is not refused
    if host == "yolov5" and missing == ["pnnx"]:
        result = _without([], code, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "best_ncnn_model" / "model.ncnn.param").is_file()


# ---- fixed-size exports (YOLOv5's tflite and coreml) ------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["tflite", "coreml"])
@pytest.mark.parametrize("flag", ["--dynamic", "--int8"])
def test_yolov5_fixed_size_exports_refuse_what_they_cannot_write(fmt, flag, calibrated_yolov5, tmp_path, capsys):
    weights = copy_into(calibrated_yolov5[0], tmp_path)
    assert run_task("export", "--weights", weights, "--include", fmt, flag) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --include {fmt} {flag}: ") and "remove " + flag in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


# ---- OpenVINO int8 (ultralytics, NNCF) ---------------------------------------------------------------------------
def test_ultralytics_openvino_int8_on_the_users_images(calibrated_ultralytics, udata, tmp_path):
    """`format=openvino quantize=8 data=...` calibrates offline (NNCF) on the demo val images, writes a quantized
    model (FakeQuantize nodes), and ultralytics' AutoBackend runs it. Its accuracy is not compared here: the model
    is random, and random weights amplify quantization error far beyond what a trained model shows."""
    import xml.etree.ElementTree as ET
    from ultralytics.nn.autobackend import AutoBackend
    weights = copy_into(calibrated_ultralytics[0], tmp_path)
    assert run_yolo("export", f"model={weights}", "format=openvino", "quantize=8", f"data={udata['det_yaml']}",
                 "imgsz=64") == 0
    folder = tmp_path / "u_int8_openvino_model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt", "u_int8_openvino_model"]
    layers = [layer.get("type") for layer in ET.parse(next(folder.glob("*.xml"))).getroot().iter("layer")]
    assert layers.count("FakeQuantize") >= 10, sorted(set(layers))
    backend = AutoBackend(str(folder), device=torch.device("cpu"))
    out = backend(_images(64, 64))
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    assert out.shape == calibrated_ultralytics[1](_images(64, 64)).shape and np.isfinite(out).all()


@pytest.mark.parametrize("fmt", ["openvino", "litert", "tflite"])
def test_ultralytics_int8_needs_data(fmt, calibrated_ultralytics, tmp_path, capsys):
    weights = copy_into(calibrated_ultralytics[0], tmp_path)
    assert run_yolo("export", f"model={weights}", f"format={fmt}", "quantize=8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"format={fmt} quantize=8 calibrates on your images: pass data=" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt"]
