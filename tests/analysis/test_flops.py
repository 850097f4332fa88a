"""FLOP counting against analytic counts: SDPA and grouped-conv-backward formulas, DAttention on both of
its code paths, yolov5l vs yolov5l_c3_dattn at 640, and YOLOv5's model summary at the run's image size."""
import argparse
import functools
import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolov5_dattn import DAttention
from yolov5_dattn.analysis.flops import (FLOP_FORMULAS, count_flops, dattention_matmul_flops, flop_counter,
                                sdpa_backward_flops, sdpa_flops)
from yolov5_dattn.analysis.profiling import build_model

REPO = Path(__file__).resolve().parents[2]
aten = torch.ops.aten
GFLOP = 1e9


# ---- formulas ------------------------------------------------------------------------------------
def test_sdpa_formula_is_two_matmuls_and_handles_gqa_and_value_width():
    assert sdpa_flops((2, 8, 400, 64), (2, 8, 100, 64), (2, 8, 100, 64)) == 2 * 2 * 2 * 8 * 400 * 100 * 64
    # grouped-query attention (2 kv heads for 8 q heads) and a wider value: 2·B·Hq·Sq·Sk·(D + Dv)
    assert sdpa_flops((1, 8, 10, 16), (1, 2, 7, 16), (1, 2, 7, 32)) == 2 * 8 * 10 * 7 * (16 + 32)
    assert sdpa_backward_flops((1, 8, 10, 16), (1, 8, 7, 16), (1, 8, 7, 16)) == 2 * sdpa_flops(
        (1, 8, 10, 16), (1, 8, 7, 16), (1, 8, 7, 16))
    with pytest.raises(ValueError):
        sdpa_flops((1, 8, 10, 16), (1, 8, 7, 8), (1, 8, 7, 16))


def test_every_sdpa_kernel_of_this_torch_has_our_formula():
    """Every fused SDPA kernel has a formula; composite ones (the math path) are counted through the
    matmuls they decompose into. Listed from the dispatcher: `dir(aten)` only shows ops already used."""
    names = sorted({n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                    if n.startswith("aten::_scaled_dot_product_")})
    composite = [n for n in names
                 if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{n}", "CompositeImplicitAutograd")]
    assert names
    missing = [n for n in names if n not in composite and getattr(aten, n) not in FLOP_FORMULAS]
    assert not missing
    q, k = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 3, 4)
    for n in composite:
        with flop_counter() as counter:
            getattr(aten, n)(q, k, k)
        assert counter.get_total_flops() == 2 * 2 * 2 * 5 * 3 * 4, n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdpa_is_counted_whichever_kernel_torch_runs(dtype):
    """Our counter gives the two matmuls of SDPA, forward and backward, whatever kernel this torch dispatches it to
    (a fused CPU kernel in fp32, which some releases have no formula for; the math path in fp64)."""
    q, k, v = (torch.randn(1, 8, n, 16, dtype=dtype) for n in (50, 30, 30))
    expected = 2 * 2 * 8 * 50 * 30 * 16
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == expected
    q.requires_grad_(True)
    out = F.scaled_dot_product_attention(q, k, v)
    with flop_counter() as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 2 * expected


@pytest.mark.parametrize("groups, transposed", [(1, False), (4, False), (64, False), (4, True)])
def test_conv_backward_counts_groups(groups, transposed):
    """Backward of a conv = grad input (as costly as the forward) + grad weight (as costly as the forward)."""
    x = torch.randn(2, 64, 12, 10, requires_grad=True)
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(64, 64, 3, padding=1, groups=groups, bias=False)
    with flop_counter() as counter:
        y = conv(x)
    forward = counter.get_total_flops()
    assert forward == 2 * 2 * 12 * 10 * 64 * (64 // groups) * 9
    with flop_counter() as counter:
        y.sum().backward()
    assert counter.get_total_flops() == 2 * forward


# ---- DAttention ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, hw, n_sampled", [
    ({}, (8, 6), 48),
    ({"stride": 2}, (8, 6), 12),
    ({"dwc_pe": False}, (8, 6), 48),  # the relative-position table: an additive bias on the scores
])
def test_dattention_matmuls_are_analytic_on_the_fused_and_the_explicit_path(kwargs, hw, n_sampled):
    torch.manual_seed(0)
    B, C = 2, 64
    module = DAttention(C, q_size=hw, n_heads=8, n_groups=4, **kwargs).eval()
    expected = dattention_matmul_flops(B, hw[0] * hw[1], n_sampled, C)
    reports = {}
    for record in (False, True):  # record=True takes the explicit path, where the weights exist
        module.record = record
        reports[record] = report = count_flops(module, list(hw), batch=B, device="cpu", channels=C)
        assert report.attention_matmuls_of("") == expected, f"record={record}"
        # the rest: q/k/v/out projections (k, v on the Ns sampled keys), the offset network, the LePE conv
        projections = 2 * B * C * C * (2 * hw[0] * hw[1] + 2 * n_sampled)
        assert report.total - expected >= projections
        assert report.thop_missed >= expected  # thop never sees the attention
    assert reports[False].total == reports[True].total
    module.record = False
    assert count_flops(module, list(hw), batch=B, channels=C).total == reports[False].total  # meta copy == real forward


# ---- yolov5l at 640 ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolov5l_pair():
    import yolov5
    base = build_model(str(Path(yolov5.__file__).parent / "models" / "yolov5l.yaml"))
    ours = build_model(str(REPO / "configs" / "yolov5l_c3_dattn.yaml"))
    return base, ours, count_flops(base, 640), count_flops(ours, 640)


def test_yolov5l_parameters_and_thop_figure(yolov5l_pair):
    base, ours, base_flops, our_flops = yolov5l_pair
    assert sum(p.numel() for p in base.parameters()) == 46_563_709
    assert sum(p.numel() for p in ours.parameters()) == 49_736_317
    assert round(base_flops.thop / GFLOP, 2) == 109.59  # YOLOv5's published yolov5l figure, unfused
    assert base_flops.thop_missed == 0 and base_flops.attention == 0  # nothing hidden from thop in YOLOv5


def test_yolov5l_c3_dattn_attention_cost(yolov5l_pair):
    base, ours, base_flops, our_flops = yolov5l_pair
    assert len(our_flops.dattention_modules) == 3
    # QKᵀ and AV of each DAttention at P5: C = 512, HW = Ns = 20·20 -> 0.328 GFLOPs, 0.983 for three
    per_layer = dattention_matmul_flops(1, 400, 400, 512)
    assert round(per_layer / GFLOP, 3) == 0.328
    assert our_flops.attention_matmuls == 3 * per_layer
    for name in our_flops.dattention_modules:
        assert our_flops.attention_matmuls_of(name) == per_layer
    # thop misses at least the matmuls; the whole block adds about 3.52 GFLOPs over the baseline's C3
    assert our_flops.thop_missed >= 3 * per_layer
    assert abs((our_flops.total - base_flops.total) / GFLOP - 3.52) < 0.01
    assert abs((our_flops.thop_with_attention - base_flops.thop) / GFLOP - 3.52) < 0.02


def test_training_step_counts_forward_and_backward():
    model = build_model(str(REPO / "configs" / "yolov5n_c3_dattn.yaml"))
    forward = count_flops(model, 128).total
    step = count_flops(model, 128, train_step=True)
    # every conv, matmul and attention costs twice its forward in backward (input and weight gradients,
    # depthwise convs included), except the first conv, whose input (the image) needs no gradient
    first = 2 * 64 * 64 * model.model[0].conv.weight.numel()
    assert step.total == 3 * forward - first


# ---- YOLOv5's model summary ----------------------------------------------------------------------
class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def summary_lines():
    from yolov5.utils.general import LOGGER
    handler, level = _Lines(), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    yield handler.lines
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


def _summary_gflops(lines):
    line = [s for s in lines if " summary: " in s][-1]
    match = re.search(r", ([\d.]+) GFLOPs at (\d+)x(\d+)", line)
    assert match, line
    return float(match.group(1)), (int(match.group(2)), int(match.group(3))), line


def test_summary_is_patched_in_yolov5():
    import yolov5.models.yolo
    import yolov5.utils.torch_utils
    from yolov5_dattn.hosts.yolov5 import summary
    assert yolov5.models.yolo.model_info is summary.model_info
    assert yolov5.utils.torch_utils.model_info is summary.model_info


def test_summary_counts_attention_at_640(yolov5l_pair, summary_lines):
    base, ours, base_flops, our_flops = yolov5l_pair
    ours.info()
    gflops, size, line = _summary_gflops(summary_lines)
    assert size == (640, 640)
    assert gflops == round(our_flops.thop_with_attention / GFLOP, 1)
    assert gflops - 109.6 > 3.4  # YOLOv5's 32-px thop probe showed no more than +2.6
    assert "thop misses" in line


def test_summary_uses_the_training_imgsz(summary_lines):
    from yolov5.models.yolo import Model

    from yolov5_dattn import patching
    from yolov5_dattn.hosts.yolov5 import compat, summary
    compat.apply_entrypoints()
    import yolov5.train
    # YOLOv5's train.train (and val/detect/export's run) are wrapped so that their body knows the run's size
    change = patching.patched(yolov5.train, "train", "the model summary reports at the run's image size")
    assert change is not None and change.step == "summary.install_sizes"

    @functools.partial(summary.sized, size_of=summary._imgsz_of)  # the wrapper yolov5.train.train has
    def train(hyp, opt, device, callbacks):  # as yolov5.train.train builds the model
        return Model(str(REPO / "configs" / "yolov5n_c3_dattn.yaml"))

    model = train({}, argparse.Namespace(imgsz=128), "cpu", None)
    gflops, size, _ = _summary_gflops(summary_lines)
    assert size == (128, 128)
    expected = count_flops(model, 128).thop_with_attention / GFLOP
    assert gflops == pytest.approx(expected, abs=0.0005)
    # YOLOv5's own models report what YOLOv5 always did (its thop figure), at the size in use
    import yolov5
    base = build_model(str(Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"))
    from yolov5_dattn.hosts.yolov5.summary import summary_imgsz
    with summary_imgsz(640):
        base.info()
    gflops, size, line = _summary_gflops(summary_lines)
    assert (gflops, size) == (4.56, (640, 640)) and "thop misses" not in line  # yolov5n unfused: 4.56
