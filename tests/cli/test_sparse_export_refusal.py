"""Exports of a model with sparse queries (`query_ratio < 1`) to a target that cannot run them are refused before
any work, on both hosts: one `error:` line naming the layer and suggesting query_ratio 1.0, exit 2, nothing written.

NCNN (pnnx) has no layer for the selection's TopK / Gather / Scatter: checked here with the real pnnx and NCNN (the
trace of a sparse layer leaves `torch.topk` in the .param file and NCNN does not load it), then refused on both
hosts. TensorRT (not installed here) is refused by its documented limits: k below 3840, and a constant k before
TensorRT 10 (a `--dynamic` export computes k from the input's size).
"""
import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from yolov5_dattn.nn import DAttention
from yolov5_dattn.sparse_export import TENSORRT_MAX_K, sparse_layers, sparse_refusal

V5_SPARSE = REPO / "configs" / "yolov5s_c3_dattn_p3p4p5_sparse.yaml"


def _v5_model(p3_ratio: float = 0.25):
    """The shipped P3/P4/P5 sparse YOLOv5 config at n-scale, P3's query_ratio set to `p3_ratio`."""
    from yolov5.models.yolo import Model
    cfg = yaml.safe_load(V5_SPARSE.read_text())
    cfg["depth_multiple"], cfg["width_multiple"] = 0.33, 0.25
    cfg["backbone"][4][3][1]["query_ratio"] = p3_ratio
    torch.manual_seed(0)
    model = Model(cfg, nc=3).eval()
    model.names = {0: "a", 1: "b", 2: "c"}
    return model


@pytest.fixture(scope="module")
def v5_sparse(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v5-sparse") / "sparse.pt"
    torch.save({"model": _v5_model(), "epoch": -1}, path)
    return path


@pytest.fixture(scope="module")
def u_sparse(tmp_path_factory) -> Path:
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  registers the blocks
    from ultralytics import YOLO

    from yolov5_dattn.cli.yolo import shipped_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("u-sparse") / "u.pt"
    YOLO(shipped_model("yolo11n-c3k2-dattn-p3p4p5-sparse.yaml")).save(str(path))
    return path


def _copy(weights: Path, folder: Path) -> Path:
    target = folder / weights.name
    target.write_bytes(weights.read_bytes())
    return target


def _cli(*args) -> int:
    from yolov5_dattn.cli import main
    return main([str(a) for a in args])


def test_pnnx_leaves_the_selection_as_a_layer_ncnn_cannot_load(tmp_path):
    """Why NCNN is refused: the real pnnx trace of one sparse layer, and NCNN's loader."""
    import ncnn
    import pnnx

    from yolov5_dattn.nn.ncnn_forms import ncnn_forms
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    torch.manual_seed(0)
    layer = DAttention(16, (4, 4), n_heads=2, n_groups=1, query_ratio=0.25).eval()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # pnnx writes scratch files in the working folder
    try:
        with torch.no_grad(), sampler_set_to("grid_sample"), ncnn_forms():
            try:
                pnnx.export(layer, str(tmp_path / "m.pt"), inputs=torch.rand(1, 16, 4, 4), device="cpu")
            except SyntaxError:  # pnnx's own Python rendering of aten::scatter; the .param is written before it
                pass
    finally:
        os.chdir(cwd)
    layers = {line.split()[0] for line in (tmp_path / "m.ncnn.param").read_text().splitlines()[2:] if line.strip()}
    unknown = sorted(t for t in layers if ncnn.layer_to_index(t) < 0)
    assert "torch.topk" in unknown, unknown
    assert ncnn.Net().load_param(str(tmp_path / "m.ncnn.param")) != 0


@pytest.mark.parametrize("include", [["ncnn"], ["onnx", "ncnn"]])
def test_yolov5_export_to_ncnn_is_refused_in_one_line(v5_sparse, include, tmp_path, capsys):
    weights = _copy(v5_sparse, tmp_path)
    assert _cli("export", "--weights", weights, "--imgsz", 64, "--device", "cpu", "--include", *include) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: --include ncnn: DAttention model.4.m.0.attention has query_ratio 0.25 (and "), err
    assert "query_ratio 1.0" in err[0] and "TopK" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparse.pt"]  # not even the ONNX file


def test_ultralytics_export_to_ncnn_is_refused_in_one_line(u_sparse, tmp_path, capsys):
    weights = _copy(u_sparse, tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert _cli("yolo", "export", f"model={weights}", "format=ncnn", "imgsz=64") == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: yolov5-dattn yolo: format=ncnn: DAttention model."), err
    assert "query_ratio 0.25" in err[0] and "query_ratio 1.0" in err[0] and "format=onnx" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt"]  # no export, no runs/ folder


def test_tensorrt_limits_k_by_the_largest_size_the_engine_is_built_for():
    # P3 at 640 is 80x80 = 6400 queries: 0.6 selects 3840 (TensorRT takes fewer), 0.59 selects 3776
    assert sparse_refusal("engine", "--include", _v5_model(0.59), 640, tensorrt_major=10) is None
    reason = sparse_refusal("engine", "--include", _v5_model(0.6), 640, tensorrt_major=10)
    assert reason == (f"--include engine: DAttention model.4.m.0.attention (query_ratio 0.6) selects 3840 of 6400 "
                      f"queries at 640x640, and TensorRT's TopK takes fewer than {TENSORRT_MAX_K}: export a model "
                      f"trained with query_ratio 1.0 (every query attends, no TopK) for this target, or --include onnx "
                      f"or openvino, or a smaller image size")
    model = _v5_model(0.25)
    # ultralytics builds a dynamic engine for up to twice the export size: 160x160 at P3, 6400 of 25600
    assert sparse_refusal("engine", "format=", model, 640, dynamic=False, engine_scale=2, tensorrt_major=10) is None
    assert "selects 6400 of 25600 queries at 1280x1280" in sparse_refusal(
        "engine", "format=", model, 640, dynamic=True, engine_scale=2, tensorrt_major=10)
    # before TensorRT 10, TopK's k must be a constant, which a --dynamic export does not have
    assert sparse_refusal("engine", "--include", model, 320, dynamic=True, tensorrt_major=8).startswith(
        "--include engine --dynamic: DAttention model.4.m.0.attention has query_ratio 0.25 (and 4 more sparse layers)")
    assert sparse_refusal("engine", "--include", model, 320, dynamic=False, tensorrt_major=8) is None


def test_formats_that_run_the_sparse_path_and_dense_models_are_not_refused():
    model = _v5_model()
    # n-scale: two bottlenecks at P3 (0.25), three at P4 (0.5); P5 is dense
    assert sparse_layers(model) == [(f"model.4.m.{i}.attention", 0.25) for i in range(2)] + [
        (f"model.6.m.{i}.attention", 0.5) for i in range(3)]
    for fmt in ("onnx", "openvino", "torchscript", "mnn"):
        assert sparse_refusal(fmt, "--include", model, 640) is None
    from yolov5.models.yolo import Model
    dense = Model(str(REPO / "configs" / "yolov5n_c3_dattn.yaml"), nc=3)
    assert sparse_layers(dense) == [] and sparse_refusal("ncnn", "--include", dense) is None
