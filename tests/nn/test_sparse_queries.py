"""Sparse queries (`DAttention(query_ratio=ρ)`): only the top-ρ salient queries attend, the rest get no attention term.

The module: ρ = 1 is the dense module exactly; k = ceil(ρ·H·W) is static; the gated sparse path has the gradients
it claims (gradcheck, float64), the scorer's included; the positions that are not selected keep exactly the
position term and the output projection's bias; our CPU kernel serves the k selected queries; a residual block with
layerscale 0 starts exactly as its stock parent. Both hosts take ρ from the YAML's fmapsize mapping and refuse a
bad one in one line; a dense checkpoint loads into a sparse model and the transfer table says what starts fresh.
Exports: ONNX opset 17 (TopK, GatherElements, ScatterElements), static and dynamic, in onnxruntime and OpenVINO.
"""
import math
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.autograd import gradcheck

from kernel_choice import chosen_kernels
from yolov5_dattn.errors import UserError
from yolov5_dattn.nn import cpu_attention as cpu_attention_module
from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.nn.query_selection import QueryScorer, selected_count
from yolov5_dattn.nn.sites import AttentionSite

REPO = Path(__file__).resolve().parents[2]
DET_CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"


def _pair(ratio: float, channels: int = 32, size=(10, 10), **kwargs):
    """A dense DAttention and a sparse one with the same weights (the sparse one's scorer is its own)."""
    torch.manual_seed(0)
    dense = DAttention(channels, size, n_heads=4, n_groups=2, **kwargs)
    sparse = DAttention(channels, size, n_heads=4, n_groups=2, query_ratio=ratio, **kwargs)
    missing, unexpected = sparse.load_state_dict(dense.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("query_scorer.") for k in missing) and missing
    return dense, sparse


# ---- the module ---------------------------------------------------------------------------------------------
def test_ratio_one_is_the_module_without_the_argument():
    torch.manual_seed(0)
    plain = DAttention(32, (10, 10), n_heads=4, n_groups=2)
    torch.manual_seed(0)
    dense = DAttention(32, (10, 10), n_heads=4, n_groups=2, query_ratio=1.0)
    assert list(plain.state_dict()) == list(dense.state_dict())
    assert not any("query_scorer" in k for k in dense.state_dict())
    x = torch.randn(2, 32, 10, 10, requires_grad=True)
    y_plain, y_dense = plain(x), dense(x)
    assert torch.equal(y_plain, y_dense)
    g_plain = torch.autograd.grad(y_plain.square().sum(), (x, *plain.parameters()))
    g_dense = torch.autograd.grad(y_dense.square().sum(), (x, *dense.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g_plain, g_dense))


@pytest.mark.parametrize("ratio,hw,k", [(0.25, (10, 10), 25), (0.1, (5, 6), 3), (0.3, (7, 7), 15),
                                        (0.5, (3, 3), 5), (1e-4, (4, 4), 1), (0.999, (4, 4), 16)])
def test_k_is_ceil_of_ratio_times_positions_and_depends_only_on_the_map(ratio, hw, k):
    # 0.1 · 30 is 3.0000000000000004 in floating point; k is integer arithmetic on ρ's fraction: 3
    assert selected_count(hw[0] * hw[1], ratio) == k == math.ceil(round(ratio * hw[0] * hw[1], 9))
    scorer = QueryScorer(8, ratio)
    for batch, seed in ((1, 0), (3, 1)):
        chosen = scorer(torch.randn(batch, 8, *hw, generator=torch.Generator().manual_seed(seed)))
        assert chosen.index.shape == chosen.gate.shape == (batch, k)
        assert all(len(set(row.tolist())) == k for row in chosen.index)  # k distinct positions per image


def test_the_cpu_kernel_serves_the_k_selected_queries(monkeypatch):
    _, sparse = _pair(0.25)
    seen = []
    attention = cpu_attention_module.attention

    def spy(q, k, v, heads):
        seen.append((tuple(q.shape), tuple(k.shape)))
        return attention(q, k, v, heads)

    monkeypatch.setattr(cpu_attention_module, "attention", spy)
    x = torch.randn(2, 32, 10, 10)
    with chosen_kernels() as chosen:
        sparse(x)  # forward
        sparse(x.requires_grad_()).sum().backward()  # training
    assert chosen == ["ours", "ours"]
    assert seen == [((2, 25, 32), (2, 100, 32))] * 2  # 25 of the 100 queries, every key


def test_selected_positions_are_gated_attention_and_the_others_keep_only_the_position_term():
    dense, sparse = _pair(0.3)
    x = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        y_dense, y_sparse = dense(x).flatten(2), sparse(x).flatten(2)  # (B, C, HW)
        chosen = sparse.query_scorer(x)
        q = torch.nn.functional.conv2d(x, dense.proj_q.weight, dense.proj_q.bias)
        base = torch.nn.functional.conv2d(dense.rpe_table(q), dense.proj_out.weight, dense.proj_out.bias).flatten(2)
    selected = torch.zeros(2, 100, dtype=torch.bool).scatter(1, chosen.index, True)
    assert int(selected.sum()) == 2 * 30
    for b in range(2):
        others = ~selected[b]
        torch.testing.assert_close(y_sparse[b][:, others], base[b][:, others], rtol=0, atol=1e-5)
        # y = W_out (lepe + g·attn) + b_out: what the selected positions add to the base is g times the dense one's
        gate = torch.zeros(100).scatter(0, chosen.index[b], chosen.gate[b])
        torch.testing.assert_close((y_sparse[b] - base[b])[:, ~others],
                                   ((y_dense[b] - base[b]) * gate)[:, ~others], rtol=1e-4, atol=1e-5)
    assert 0.9 < float(chosen.gate.min()) <= float(chosen.gate.max()) < 1.1  # a fresh scorer's gate is near 1


# DAttention computes sampling positions and bilinear reads in fp32 whatever the input dtype, so a float64 gradcheck
# sees fp32 rounding wherever the positions move. Two cuts avoid them: no_off (keys pooled, the whole forward in
# float64: input, projections, scorer, selection, attention, scatter) and, with the positions held (x fixed), the
# table bias's rows gathered for the selected queries.
GRADCHECKS = {
    "no_off, input and weights": ({"no_off": True}, True, ["query_scorer.score.0.weight", "query_scorer.score.2.weight",
                                                           "query_scorer.score.2.bias", "proj_q.weight"]),
    "table bias, weights": ({"dwc_pe": False}, False, ["query_scorer.score.0.weight", "query_scorer.score.2.weight",
                                                       "rpe_table", "proj_k.weight", "proj_v.weight"]),
}


@pytest.mark.parametrize("case", list(GRADCHECKS))
def test_gradcheck_of_the_sparse_path(case):
    variant, with_input, names = GRADCHECKS[case]
    torch.manual_seed(0)
    module = DAttention(8, (4, 4), n_heads=2, n_groups=1, query_ratio=0.5, **variant).double()
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=with_input)
    params = dict(module.named_parameters())
    leaves = [params[n].detach().clone().requires_grad_() for n in names]

    def forward(*inputs):
        x_, weights = (inputs[0], inputs[1:]) if with_input else (x, inputs)
        return torch.func.functional_call(module, dict(zip(names, weights)), (x_,))

    inputs = (x, *leaves) if with_input else tuple(leaves)
    assert gradcheck(forward, inputs, fast_mode=True)
    # the scorer learns from whatever loss is put on the output: its weights get a gradient through the gate
    grads = torch.autograd.grad(forward(*inputs).square().sum(), leaves[:2])
    assert all(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("ratio", [0, 0.0, -0.25, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_a_ratio_outside_0_1_is_refused_at_construction(ratio):
    with pytest.raises(ValueError, match=r"DAttention: query_ratio must be a number in \(0, 1\]"):
        DAttention(32, (10, 10), n_heads=4, n_groups=2, query_ratio=ratio)


def test_record_keeps_the_selected_positions_and_zero_rows_for_the_others():
    _, sparse = _pair(0.25)
    sparse.record = True
    with torch.no_grad(), chosen_kernels() as chosen:
        sparse(torch.randn(1, 32, 10, 10))
    assert chosen == ["explicit"]
    attn, selected = sparse.recorded["attn"], sparse.recorded["selected"]
    assert attn.shape == (1, 4, 100, 100) and selected.shape == (1, 25)
    rows = attn.sum(-1)[0]  # (heads, HW): 1 for a query that attended, 0 for the others
    expected = torch.zeros(100).scatter(0, selected[0], 1.0).expand(4, -1)
    torch.testing.assert_close(rows, expected)


# ---- blocks, both hosts -------------------------------------------------------------------------------------
def test_layerscale_blocks_with_sparse_queries_start_as_their_stock_parents():
    import yolov5_dattn  # noqa: F401  applies the compat layer
    from ultralytics.nn.modules.block import C3k2
    from yolov5.models.common import C3

    from yolov5_dattn.hosts.ultralytics.blocks import C3k2_DAttention
    from yolov5_dattn.hosts.yolov5.blocks import C3_DAttention
    fmapsize = {"q_size": [8, 8], "query_ratio": 0.25, "layerscale": 0.0}
    x = torch.randn(2, 32, 8, 8)
    for ours, stock in ((C3_DAttention(32, 32, 1, fmapsize, True), C3(32, 32, 1, True)),
                        (C3k2_DAttention(32, 32, 1, fmapsize, False), C3k2(32, 32, 1, False))):
        ours.eval(), stock.eval()
        missing, unexpected = ours.load_state_dict(stock.state_dict(), strict=False)
        assert not unexpected and all(".attention." in k or ".layer_scale." in k for k in missing)
        assert any(".attention.query_scorer." in k for k in missing)
        with torch.no_grad():
            assert torch.equal(ours(x), stock(x)), type(ours).__name__


def _cfg(tmp_path, name: str, args) -> Path:
    """yolov5n_c3_dattn.yaml with layer 8's arguments replaced."""
    cfg = yaml.safe_load(DET_CFG.read_text())
    cfg["backbone"][8][3] = args
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_opt(cfg, **kw) -> Namespace:
    return Namespace(**{"cfg": str(cfg), "weights": "", "imgsz": 128, "rect": False, "multi_scale": False,
                        "resume": False, **kw})


def test_yolov5_yaml_sets_the_ratio_and_preflight_says_how_many_queries_attend(tmp_path):
    from yolov5_dattn.hosts.yolov5.preflight import build_from_cfg, preflight
    cfg = _cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.25}])
    model = build_from_cfg(str(cfg))
    ratios = [m.query_ratio for m in model.modules() if isinstance(m, DAttention)]
    assert ratios == [0.25] and hasattr(model.model[8].m[0].attention, "query_scorer")
    lines = preflight(_train_opt(cfg), "train")
    assert lines[0].startswith("DAttention model.8.m.0.attention: stride 32, dwc_pe, query_ratio 0.25: 4 of 16 "
                               "queries attend, declared [20, 20] (any size); --imgsz 128 -> [4, 4]")


def test_yolov5_refuses_a_bad_ratio_in_one_line_before_the_run_folder(tmp_path, demo, capsys):
    from yolov5_dattn.hosts.yolov5.entrypoint import main
    from yolov5_dattn.hosts.yolov5.preflight import preflight
    cfg = _cfg(tmp_path, "bad", [1024, {"q_size": [20, 20], "query_ratio": 1.5}])
    with pytest.raises(UserError) as e:
        preflight(_train_opt(cfg), "train")
    assert str(e.value).startswith(f"--cfg {cfg}: layer 8 (C3_DAttention [256, 256, 1, ")
    assert "query_ratio must be a number in (0, 1]" in str(e.value) and "\n" not in str(e.value)
    project = tmp_path / "runs"
    assert main("train", ["--cfg", str(cfg), "--data", str(demo["det_yaml"]), "--imgsz", "64", "--epochs", "1",
                          "--device", "cpu", "--project", str(project)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: --cfg ") and "query_ratio" in err[0]
    assert not project.exists()


def test_both_seams_refuse_a_loaded_model_whose_ratio_selects_nothing(tmp_path):
    """A constructor refuses such a ratio; a model object can still carry one (an edited checkpoint)."""
    from yolov5_dattn.hosts.ultralytics.fmap_checks import FeatureMapError, Plan, check_plan
    from yolov5_dattn.hosts.yolov5.preflight import build_from_cfg, check_sizes
    model = build_from_cfg(str(_cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.25}])))
    model.model[8].m[0].attention.query_scorer.ratio = 0.0
    with pytest.raises(UserError) as e:
        check_sizes(Namespace(imgsz=[128], rect=False, multi_scale=False), "detect", model)
    assert str(e.value) == ("model.8.m.0.attention: query_ratio 0 selects 0 of the 16 queries of its [4, 4] map: "
                            "use a query_ratio in (0, 1]; the smallest that works there is 0.0625 (1 query), 1.0 "
                            "attends with all (--imgsz 128)")
    site = AttentionSite("layer.attention", DAttention(16, [2, 2], n_heads=2, n_groups=1, query_ratio=0.5), 32)
    assert check_plan([site], Plan("predict", 64, (64, 64), 32)).lines[0].startswith(
        "DAttention layer.attention: stride 32, dwc_pe, query_ratio 0.5: 2 of 4 queries attend")
    site.module.query_scorer.ratio = 2.0
    with pytest.raises(FeatureMapError, match=r"^layer.attention: query_ratio 2 selects 8 of the 4 queries of its "
                                              r"\[2, 2\] map: use a query_ratio in \(0, 1\]; the smallest that works "
                                              r"there is 0.25 \(1 query\), 1.0 attends with all \(imgsz=64\)$"):
        check_plan([site], Plan("predict", 64, (64, 64), 32))


# ---- transfer: a dense checkpoint into a sparse model, and back -------------------------------------------------
def test_a_dense_checkpoint_loads_into_a_sparse_model_and_the_table_says_the_scorers_start_fresh(tmp_path):
    from yolov5.utils.general import intersect_dicts

    from yolov5_dattn.hosts.yolov5.preflight import build_from_cfg
    from yolov5_dattn.hosts.yolov5.transfer import format_table, summarise
    dense = build_from_cfg(str(DET_CFG)).state_dict()
    sparse_model = build_from_cfg(str(_cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.25}])))
    sparse = sparse_model.state_dict()
    scorer_keys = [k for k in sparse if ".query_scorer." in k]
    assert len(scorer_keys) == 4  # one DAttention at n-scale: two convs, weight and bias

    transferred = intersect_dicts(dense, sparse, exclude=["anchor"])
    report = summarise(dense, sparse, transferred, ["anchor"])
    assert report.keys["scorer"] == scorer_keys and not report.keys["attention"] and not report.keys["missing"]
    assert len(report.keys["transferred"]) == len(sparse) - 4 - len(report.keys["excluded"])
    table = format_table(report, "dense.pt")
    assert "fresh: query scorers (query_ratio < 1)" in table and "fresh DAttention" not in table
    assert "query scorers start fresh: the checkpoint's DAttention attends with every query" in table
    missing, unexpected = sparse_model.load_state_dict(transferred, strict=False)
    assert sorted(missing) == sorted(scorer_keys + report.keys["excluded"]) and not unexpected

    back = summarise(sparse, dense, intersect_dicts(sparse, dense, exclude=["anchor"]), ["anchor"])
    assert back.unused == back.unused_scorers == 4 and not back.keys["scorer"]
    assert "4 of them are query-scorer tensors" in format_table(back)


def test_ultralytics_load_of_a_dense_model_into_a_sparse_one_reports_the_scorers(tmp_path):
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  registers the blocks
    from ultralytics.nn.tasks import DetectionModel

    from yolov5_dattn.hosts.ultralytics import transfer
    cfg = yaml.safe_load((REPO / "configs" / "ultralytics" / "yolo11-c3k2-dattn.yaml").read_text())
    dense = DetectionModel(cfg, nc=3, verbose=False)
    cfg["backbone"][8][3][1] = {"q_size": [20, 20], "query_ratio": 0.5}
    sparse = DetectionModel(cfg, nc=3, verbose=False)
    ratios = [m.query_ratio for m in sparse.modules() if isinstance(m, DAttention)]
    assert ratios and set(ratios) == {0.5}
    report = transfer.log_report(sparse, dense)
    assert len(report.keys["scorer"]) == 4 * len(ratios) and not report.keys["attention"]
    assert report.keys["transferred"] and not report.keys["missing"] and not report.keys["shape"]
    lines = transfer.by_layer(report, sparse, dense.state_dict(), sparse.state_dict())
    assert any("fresh (query scorer)" in line for line in lines)



def test_sparse_checkpoints_load_restricted_on_both_hosts(tmp_path):
    """The scorer's class is on both hosts' weights-only allowlists: a sparse checkpoint loads without trust."""
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  registers the blocks
    from ultralytics.nn.tasks import DetectionModel, torch_safe_load

    from yolov5_dattn.hosts.yolov5.checkpoints import check_model_checkpoint
    from yolov5_dattn.hosts.yolov5.preflight import build_from_cfg
    model = build_from_cfg(str(_cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.25}])))
    torch.save({"model": model, "epoch": -1}, tmp_path / "yolov5.pt")
    loaded = check_model_checkpoint(str(tmp_path / "yolov5.pt"))
    assert loaded.model[8].m[0].attention.query_scorer.ratio == 0.25
    cfg = yaml.safe_load((REPO / "configs" / "ultralytics" / "yolo11-c3k2-dattn.yaml").read_text())
    cfg["backbone"][8][3][1] = {"q_size": [20, 20], "query_ratio": 0.5}
    torch.save({"model": DetectionModel(cfg, nc=3, verbose=False), "train_args": {}}, tmp_path / "u.pt")
    ckpt, _ = torch_safe_load(tmp_path / "u.pt")
    assert {m.query_ratio for m in ckpt["model"].modules() if isinstance(m, DAttention)} == {0.5}




@pytest.mark.parametrize("name", ["yolov5s_c3_dattn_p3p4p5_sparse.yaml", "segment/yolov5s-seg_c3_dattn_p3p4p5_sparse.yaml",
                                  "ultralytics/yolo11-c3k2-dattn-p3p4p5-sparse.yaml"])
def test_shipped_sparse_configs_build_with_their_ratios_and_run(name):
    from yolov5_dattn import shipped
    assert name in shipped.list_configs()
    path = REPO / "configs" / name
    if name.startswith("ultralytics/"):
        import yolov5_dattn.hosts.ultralytics  # noqa: F401  registers the blocks
        from ultralytics.nn.tasks import DetectionModel
        model = DetectionModel(str(path.with_name("yolo11n-c3k2-dattn-p3p4p5-sparse.yaml")), nc=3, verbose=False)
        layers = {4: 0.25, 6: 0.5, 8: 1.0}
    else:
        from yolov5.models.yolo import Model
        model = Model(str(path), nc=3)
        layers = {4: 0.25, 6: 0.5, 8: 1.0}
    for index, ratio in layers.items():
        found = {m.query_ratio for m in model.model[index].modules() if isinstance(m, DAttention)}
        assert found == {ratio}, (index, found)
    model.eval()
    with torch.no_grad(), chosen_kernels() as chosen:
        out = model(torch.rand(1, 3, 128, 128))
    assert chosen and torch.isfinite(out[0] if isinstance(out, (list, tuple)) else out).all()


# ---- cost ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.1])
def test_flops_count_only_the_selected_queries(ratio):
    from yolov5_dattn.analysis.flops import count_flops, dattention_matmul_flops
    dense = count_flops(DAttention(64, (40, 40)), imgsz=40, channels=64)
    sparse = count_flops(DAttention(64, (40, 40), query_ratio=ratio), imgsz=40, channels=64)
    k = selected_count(1600, ratio)
    assert dense.attention_matmuls_of("") == dattention_matmul_flops(1, 1600, 1600, 64)
    assert sparse.attention_matmuls_of("") == dattention_matmul_flops(1, k, 1600, 64)
    assert sparse.attention_matmuls_of("") / dense.attention_matmuls_of("") == pytest.approx(ratio, rel=1e-3)
    # the scorer (C -> C/4 -> 1) is what the layer pays on top: under 3 % of the dense layer's total here
    assert 0 < sparse.total - (dense.total - dense.attention_matmuls_of("") + sparse.attention_matmuls_of("")) \
        < 0.03 * dense.total


def test_model_flops_of_a_sparse_yaml(tmp_path):
    from yolov5.models.yolo import Model

    from yolov5_dattn.analysis.flops import count_flops
    dense = count_flops(Model(str(DET_CFG)), imgsz=640)
    sparse = count_flops(Model(str(_cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.25}]))),
                         imgsz=640)
    assert sparse.attention_matmuls_of("model.8.m.0.attention") * 4 == dense.attention_matmuls_of(
        "model.8.m.0.attention")  # 100 of the 400 queries of the 20x20 map


# ---- export ------------------------------------------------------------------------------------------------
class _Net(torch.nn.Module):
    """A stem, a sparse DAttention at stride 4, a head: exported as one graph."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 32, 4, 4)
        self.attention = DAttention(32, (8, 8), n_heads=4, n_groups=2, query_ratio=0.25)
        self.head = torch.nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.head(self.attention(self.stem(x)))


def _export(path: Path, dynamic: bool) -> Path:
    net = _Net().eval()
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "h", 3: "w"}} if dynamic else None
    with torch.no_grad():
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["out"], dynamic_axes=axes)
    return path


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_onnx_export_runs_in_onnxruntime_and_openvino(dynamic, tmp_path):
    import onnx
    import onnxruntime as ort

    from yolov5_dattn.hosts.yolov5.deploy import import_openvino
    path = _export(tmp_path / "sparse.onnx", dynamic)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"TopK", "GatherElements", "ScatterElements"} <= ops
    net = _Net().eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = import_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    shapes = [(1, 32, 32)] + ([(2, 32, 32), (1, 48, 64), (3, 64, 64)] if dynamic else [])
    for b, h, w in shapes:
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h + w + b))
        with torch.no_grad():
            expected = net(x).numpy()
        for runtime, got in (("onnxruntime", session.run(None, {"images": x.numpy()})[0]),
                             ("openvino", compiled(x.numpy())[0])):
            assert got.shape == expected.shape, (runtime, b, h, w)
            diff = float(np.abs(got - expected).max())
            assert diff <= 1e-4, f"{runtime} at batch {b}, {h}x{w}: max abs diff {diff}"


def test_yolov5_export_of_a_sparse_model_runs_at_dynamic_sizes(tmp_path):
    """YOLOv5's own export (fused, `--dynamic`, opset 17) of a yolov5n with a sparse P5 layer, in onnxruntime."""
    import onnxruntime as ort
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Model

    from conftest import run_task
    torch.manual_seed(0)
    model = Model(str(_cfg(tmp_path, "sparse", [1024, {"q_size": [20, 20], "query_ratio": 0.3}])), nc=3).eval()
    model.names = {0: "a", 1: "b", 2: "c"}
    weights = tmp_path / "sparse.pt"
    torch.save({"model": model, "epoch": -1}, weights)
    assert run_task("export", "--weights", weights, "--imgsz", 64, "--device", "cpu", "--include", "onnx",
                    "--dynamic") == 0
    fused = attempt_load(str(weights), device="cpu", fuse=True).eval()
    session = ort.InferenceSession(str(weights.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    for b, h, w in ((1, 64, 64), (2, 96, 128)):
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            expected = fused(x)[0].numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        # within 1e-4 of each value's size: the box outputs are pixels (up to ~350), the scores below 1
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=f"batch {b}, {h}x{w}")
