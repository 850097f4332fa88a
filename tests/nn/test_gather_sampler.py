"""The Gather sampler: `grid_sample`'s numbers without a GridSample node, chosen at export on both hosts.

- `grid_sample_gather` equals `F.grid_sample(bilinear, align_corners=True, zeros)` within 1e-5, gradients too, on
  random grids reaching far outside [-1, 1] and on maps 1 pixel wide / high;
- a DAttention under `sampler_set_to("gather")` equals the default within 1e-5 (several group counts, bounded,
  unbounded and far-reaching offsets, the sampled position table);
- YOLOv5 (`--sampler gather`) and ultralytics (`sampler=gather`) ONNX exports at opset 17, static and `--dynamic`,
  of the shipped n-scale DAttention models have no GridSample, only node types TensorRT's ONNX parser supports,
  and run in onnxruntime within 5e-4 of PyTorch (boxes relative to the largest box value, since their fp32 error
  is pixels whatever the coordinate; scores absolute) at batch 1 and 2 and two sizes, one not square; the models'
  BatchNorm statistics come from random images, so their outputs move by more than 1 between two images (the
  comparison can fail);
- `scripts/check_tensorrt.py` refuses, in one line, to run without tensorrt or a CUDA GPU.
"""
import importlib.util
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from calibrated_models import assert_varies, copy_into
from conftest import REPO, load_script, run_task
from yolov5_dattn.errors import UserError
from yolov5_dattn.export_sampler import export_sampler
from yolov5_dattn.nn import DAttention
from yolov5_dattn.nn.gather_sampler import grid_sample_gather
from yolov5_dattn.nn.sampler_switch import sampler, sampler_set_to, set_sampler

# Operators TensorRT's ONNX parser supports ("Y" rows of its support matrix), from onnx-tensorrt
# docs/operators.md at 96e781103cfc4adf4a6bb557e94bac8e693f6f4c ("ONNX-TensorRT 10.1 GA release",
# https://github.com/onnx/onnx-tensorrt/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/docs/operators.md),
# which covers opsets 9 to 20 and so opset 17. GridSample is listed there but left out here: it is what the
# Gather sampler replaces. (TensorRT 8.5, the first release for opset 17, lacks LayerNormalization, which
# opset 17 exports of LayerNorm use: docs/deploy.md says how to avoid it.)
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GroupNormalization GRU HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign
Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Upsample Where Xor
""".split())
assert "GridSample" not in TENSORRT_ONNX_OPS

TOL = 1e-5  # sampler and module
# A whole exported model against PyTorch: boxes relative to the largest box value, scores absolute. Measured on
# the calibrated n-scale models: 2e-5 to 5e-5 and 7e-5, the same with the default grid_sample export (onnxruntime's
# and PyTorch's own fp32 rounding), so the margin covers other CPUs; the outputs move by 200 to 1100 per image.
ONNX_TOL = 5e-4
EXPORT_IMGSZ = 64
SIZES = ((64, 64), (64, 96))  # the second not square
SHAPES = [(b, h, w) for b in (1, 2) for h, w in SIZES]


def _max(t: torch.Tensor) -> float:
    return float(t.detach().abs().max())


def _reference(x, grid):
    return F.grid_sample(x, grid, mode="bilinear", align_corners=True, padding_mode="zeros")


def _grid(n, ho, wo, seed):
    """Random (x, y) positions, most within ±3 (a third inside the map), a few far outside, and the map's own
    corners and edges exactly (±1: where a tap lands on the last pixel and its neighbour is outside)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(n, ho, wo, 2, generator=g) * 1.5
    grid.view(-1, 2)[:4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 0.3]])
    grid.view(-1, 2)[4:6] = torch.tensor([[1e3, -1e3], [-5e3, 2e4]])
    return grid


# (N, C, H, W) of the map, (Ho, Wo) of the grid; 1-pixel-wide, -high and 1×1 maps included
CASES = [(2, 8, 7, 9, 5, 6), (3, 4, 20, 20, 4, 7), (2, 6, 1, 9, 3, 5), (2, 6, 9, 1, 5, 3), (2, 3, 1, 1, 4, 4),
         (1, 16, 2, 3, 6, 6)]


@pytest.mark.parametrize("n,c,h,w,ho,wo", CASES)
def test_gather_equals_grid_sample_with_its_gradients(n, c, h, w, ho, wo):
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grid = _grid(n, ho, wo, seed=h * 100 + w).requires_grad_()
    upstream = torch.randn(n, c, ho, wo, generator=torch.Generator().manual_seed(2))
    expected, got = _reference(x, grid), grid_sample_gather(x, grid)
    assert got.shape == expected.shape == (n, c, ho, wo) and got.dtype == torch.float32
    assert _max(got - expected) <= TOL
    assert _max(expected) > 0.1  # the grid reads the map, not only zeros
    far = got[0].flatten(1)[:, 4:6]  # (C, 2)
    if h > 1 or w > 1:
        assert _max(far) == 0.0  # far outside: zeros
    else:  # a 1×1 map has no extent: every position is its pixel (grid_sample's (size - 1) scale is 0)
        assert _max(far - x[0, :, :1, 0]) == 0.0
    grads_expected = torch.autograd.grad(expected, (x, grid), upstream)
    grads_got = torch.autograd.grad(got, (x, grid), upstream)
    for name, e, g in zip(("input", "grid"), grads_expected, grads_got):
        assert _max(g - e) <= TOL * max(1.0, _max(e)), name


# DAttention variants: group counts, unbounded offsets (clamped), offsets reaching far beyond the map, the
# interpolated position table (whose bias is itself sampled)
VARIANTS = [dict(n_groups=1), dict(n_groups=2), dict(n_groups=4), dict(n_groups=2, offset_range_factor=-1),
            dict(n_groups=2, offset_range_factor=40), dict(n_groups=4, dwc_pe=False, stride=2)]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_dattention_with_the_gather_sampler_equals_the_default(kwargs):
    torch.manual_seed(0)
    module = DAttention(32, (8, 8), n_heads=4, **kwargs)
    x = torch.randn(2, 32, 8, 12, requires_grad=True)  # not the declared size, not square
    module.eval()
    if kwargs.get("offset_range_factor") == 40:
        module.record = True  # the sampling positions: some fall far outside the map
        module(x)
        assert float(module.recorded["pos"].abs().max()) > 1.5
        module.record = False
    expected = module(x)
    with sampler_set_to("gather"):
        got = module(x)
    assert _max(got - expected) <= TOL
    # training mode, backward: the same gradients for the input and every parameter
    module.train()
    upstream = torch.randn_like(expected)
    grads = []
    for choice in ("grid_sample", "gather"):
        with sampler_set_to(choice):
            out = module(x)
        grads.append(torch.autograd.grad(out, [x, *module.parameters()], upstream))
    for e, g in zip(*grads):
        assert _max(g - e) <= TOL * max(1.0, _max(e))


@pytest.mark.parametrize("choice,has_grid_sample", [("grid_sample", True), ("gather", False)])
def test_the_switch_decides_what_an_export_contains(choice, has_grid_sample, tmp_path):
    torch.manual_seed(0)
    module = DAttention(32, (8, 8), n_heads=4, n_groups=2, dwc_pe=False).eval()  # samples keys and its table
    path = tmp_path / "m.onnx"
    with sampler_set_to(choice):
        torch.onnx.export(module, (torch.randn(1, 32, 8, 8),), str(path), opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("GridSample") == (2 if has_grid_sample else 0)
    assert ("Floor" in ops) is not has_grid_sample  # the Gather sampler's corner taps


def test_switch_choices_and_restore():
    before = sampler()
    with sampler_set_to("gather"):
        assert sampler() == "gather"
    assert sampler() == before
    with pytest.raises(ValueError, match="grid_sample, gather"):
        set_sampler("bicubic")
    assert sampler() == before


def test_export_default_sampler_per_format():
    assert export_sampler(["onnx"]) == export_sampler(["torchscript", "openvino"]) == "grid_sample"
    for formats in (["engine"], ["onnx", "engine"], ["tflite"], ["coreml"], ["ncnn"], ["mnn"]):
        assert export_sampler(formats) == "gather", formats
    assert export_sampler(["engine"], "grid_sample") == "grid_sample"
    assert export_sampler(["onnx"], "gather") == "gather"
    with pytest.raises(ValueError):
        export_sampler(["onnx"], "nearest")


def test_low_opset_is_refused_only_with_grid_sample():
    """opset < 16 has no GridSample: refused for the grid_sample sampler, allowed with --sampler gather."""
    from yolov5_dattn.hosts.yolov5.run_checks import check_export
    models = [DAttention(32, (8, 8), n_heads=4)]
    opt = Namespace(include=["onnx"], opset=14, device="cpu", half=False)
    with pytest.raises(UserError, match="--sampler gather"):
        check_export(opt, models, None)
    check_export(opt, models, "gather")


# ---- exports of the shipped n-scale models ------------------------------------------------------------------
def assert_tensorrt_ready(path: Path, opset: int = 17):
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    ops = {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert "GridSample" not in ops
    assert {"Gather", "Floor"} <= ops  # the sampler is in the graph
    assert ops <= TENSORRT_ONNX_OPS, sorted(ops - TENSORRT_ONNX_OPS)


def assert_close(got: np.ndarray, expected: np.ndarray, where: str, box_axis: int):
    """`got` matches `expected` (a detection output whose first 4 entries along `box_axis` are box pixels, the
    rest scores in [0, 1]). A box coordinate near 0 comes from the same large sums as one near the image's edge,
    so its error is measured against the largest box value, not its own."""
    assert got.shape == expected.shape, where
    boxes, scores = np.split(np.abs(got - expected), [4], axis=box_axis)
    box_scale = max(1.0, float(np.abs(np.split(expected, [4], axis=box_axis)[0]).max()))
    worst = max(float(boxes.max()) / box_scale, float(scores.max()))
    assert worst <= ONNX_TOL, f"{where}: {worst}"


def _images(b, h, w, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _session(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_yolov5_dynamic_gather_export_runs_at_every_size(calibrated_yolov5, tmp_path):
    checkpoint, pytorch = calibrated_yolov5
    weights = copy_into(checkpoint, tmp_path)
    assert run_task("export", "--weights", weights, "--imgsz", EXPORT_IMGSZ, "--device", "cpu", "--include", "onnx",
                    "--opset", "17", "--dynamic", "--sampler", "gather") == 0
    assert sampler() == "grid_sample"  # the export's choice ends with it
    path = weights.with_suffix(".onnx")
    assert_tensorrt_ready(path)
    session = _session(path)
    for b, h, w in SHAPES:
        assert_varies(pytorch, b, h, w)
        x = _images(b, h, w)
        assert_close(session.run(None, {"images": x.numpy()})[0], pytorch(x), f"batch {b}, {h}x{w}", box_axis=2)


def test_yolov5_static_gather_export(calibrated_yolov5, tmp_path):
    checkpoint, pytorch = calibrated_yolov5
    weights = copy_into(checkpoint, tmp_path)
    assert run_task("export", "--weights", weights, "--imgsz", EXPORT_IMGSZ, "--device", "cpu", "--include", "onnx",
                    "--sampler", "gather") == 0  # opset 17 by default
    path = weights.with_suffix(".onnx")
    assert_tensorrt_ready(path)
    assert_varies(pytorch, 1, EXPORT_IMGSZ, EXPORT_IMGSZ)
    x = _images(1, EXPORT_IMGSZ, EXPORT_IMGSZ, seed=1)
    assert_close(_session(path).run(None, {"images": x.numpy()})[0], pytorch(x), "static", box_axis=2)
    check = load_script("check_tensorrt.py")
    assert check.input_shapes(path, [1, 2], ["64x96"]) == ("images", [(1, 3, EXPORT_IMGSZ, EXPORT_IMGSZ)])


def test_yolov5_bad_sampler_is_refused(calibrated_yolov5, tmp_path, capsys):
    weights = copy_into(calibrated_yolov5[0], tmp_path)
    with pytest.raises(SystemExit) as e:
        run_task("export", "--weights", weights, "--include", "onnx", "--sampler", "bicubic")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--sampler: invalid choice" in err and "bicubic" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def _yolo_export(weights, *keys):
    from yolov5_dattn.cli.yolo import main
    return main(["export", f"model={weights}", "format=onnx", f"imgsz={EXPORT_IMGSZ}", "opset=17", *keys])


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_ultralytics_gather_export(calibrated_ultralytics, dynamic, tmp_path):
    checkpoint, pytorch = calibrated_ultralytics
    weights = copy_into(checkpoint, tmp_path)
    assert _yolo_export(weights, f"dynamic={dynamic}", "sampler=gather") == 0
    assert sampler() == "grid_sample"
    path = weights.with_suffix(".onnx")
    assert_tensorrt_ready(path)
    session = _session(path)
    for b, h, w in SHAPES if dynamic else [(1, EXPORT_IMGSZ, EXPORT_IMGSZ)]:
        assert_varies(pytorch, b, h, w)
        x = _images(b, h, w, seed=2)
        assert_close(session.run(None, {"images": x.numpy()})[0], pytorch(x), f"batch {b}, {h}x{w}", box_axis=1)


@pytest.mark.parametrize("args,message", [
    (["export", "format=onnx", "sampler=bicubic"], "sampler=bicubic: choose one of grid_sample, gather"),
    (["predict", "source=x.jpg", "sampler=gather"], "sampler= applies to `yolo export` only"),
])
def test_ultralytics_bad_sampler_is_refused(calibrated_ultralytics, args, message, tmp_path, capsys):
    from yolov5_dattn.cli.yolo import main
    weights = copy_into(calibrated_ultralytics[0], tmp_path)
    assert main([*args, f"model={weights}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt"]


# ---- scripts/check_tensorrt.py ---------------------------------------------------------------------------------
def _check_tensorrt(*args, env_path=None):
    import os
    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(env_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_tensorrt.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_check_tensorrt_refuses_without_tensorrt_or_a_gpu(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read before the checks")
    result = _check_tensorrt(model)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: tensorrt is not installed: on a machine with an NVIDIA GPU, pip install tensorrt (nothing was built)"]
    # with a tensorrt module importable but no CUDA GPU (this machine's torch sees none)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tensorrt.py").write_text("raise SystemExit('tensorrt imported before the checks')\n")
    if not torch.cuda.is_available():
        result = _check_tensorrt(model, env_path=fake)
        assert result.returncode == 2
        err = result.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: no CUDA GPU is visible"), err
    result = _check_tensorrt(tmp_path / "missing.onnx")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "missing.onnx not found" in result.stderr
