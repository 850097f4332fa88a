"""The fused DAttention against the einsum reference: same outputs and gradients for every variant,
which kernel runs when, reduced precision, and torch.compile. Speed and memory are measured by
scripts/benchmark_attention.py, not here."""
import pytest
import torch

from kernel_choice import chosen_kernels
from yolov5_dattn.nn.reference import ReferenceDAttention
from test_modules import VARIANTS as MODULE_VARIANTS
from yolov5_dattn import DAttention
from yolov5_dattn.nn import cpu_attention

# (name, kwargs); the declared map is 8×6 (non-square) so fixed_pe's table is 48×48 (12×12 at stride 2)
VARIANTS = MODULE_VARIANTS + [("stride2_fixed_pe", {"stride": 2, "dwc_pe": False, "fixed_pe": True})]
IDS = [v[0] for v in VARIANTS]
DECLARED = (8, 6)
# a one-pixel map (YOLOv5's 32-px profile at P5) and a non-square size other than the declared one, for
# every variant; the declared size too where it matters (fixed_pe: the table is used as stored, not resampled)
SIZES = [(1, 1), (5, 7)]
AT_DECLARED = [(name, kwargs, DECLARED) for name, kwargs in VARIANTS if kwargs.get("fixed_pe")]
CASES = [(name, kwargs, hw) for name, kwargs in VARIANTS for hw in SIZES] + AT_DECLARED


def pair(kwargs, channels=32, seed=0):
    """A DAttention and a reference holding the same weights; offsets made large enough to matter."""
    torch.manual_seed(seed)
    fast = DAttention(channels, DECLARED, **kwargs)
    with torch.no_grad():
        fast.conv_offset[3].weight.mul_(4.0)  # shifts of a few cells, not ~0: sampling is exercised
        if isinstance(fast.rpe_table, torch.nn.Parameter):
            fast.rpe_table.normal_()  # a bias that changes the softmax visibly
    ref = ReferenceDAttention(channels, DECLARED, **kwargs)
    ref.load_state_dict(fast.state_dict(), strict=True)
    return fast, ref


def grads(module, x, weight):
    """Output, input gradient and parameter gradients of sum(module(x) * weight)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    y = module(x)
    (y * weight).sum().backward()
    return y.detach(), x.grad, {k: p.grad for k, p in module.named_parameters() if p.grad is not None}


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name,kwargs,hw", CASES, ids=[f"{c[0]}-{c[2][0]}x{c[2][1]}" for c in CASES])
def test_matches_reference_forward_and_gradients(name, kwargs, hw):
    fast, ref = pair(kwargs)
    x, weight = torch.randn(2, 32, *hw), torch.randn(2, 32, *hw)
    y_f, gx_f, gp_f = grads(fast, x, weight)
    y_r, gx_r, gp_r = grads(ref, x, weight)
    torch.testing.assert_close(y_f, y_r, atol=1e-4, rtol=0)
    torch.testing.assert_close(gx_f, gx_r, atol=1e-4, rtol=1e-4)
    assert gp_f.keys() == gp_r.keys()
    for key in gp_r:
        torch.testing.assert_close(gp_f[key], gp_r[key], atol=1e-4, rtol=1e-4, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=IDS)
def test_inference_runs_the_fused_kernel_and_matches(name, kwargs):
    """Without autograd every variant, bias variants included (as an additive mask), is fused: our CPU kernel at
    these 4 channels per head without a bias, SDPA (which takes the mask) with one."""
    fast, ref = pair(kwargs)
    fast.eval(), ref.eval()
    x = torch.randn(2, 32, *DECLARED)
    with torch.no_grad(), chosen_kernels() as chosen:
        y = fast(x)
    assert chosen == [fused_kernel(fast)]
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,kwargs,fused", [
    ("dwc_pe", {}, True), ("no_pe", {"use_pe": False}, True), ("no_off", {"no_off": True}, True),
    ("table", {"dwc_pe": False}, False), ("log_cpb", {"dwc_pe": False, "log_cpb": True}, False)])
def test_training_kernel_choice(name, kwargs, fused):
    """Training: fused forward and backward, except where a bias needs its gradient (explicit path)."""
    fast, ref = pair(kwargs)
    x = torch.randn(1, 32, *DECLARED)
    with chosen_kernels() as chosen:
        y_f, gx_f, _ = grads(fast, x, torch.ones_like(x))
    assert chosen == ([fused_kernel(fast)] if fused else ["explicit"])
    y_r, gx_r, _ = grads(ref, x, torch.ones_like(x))
    torch.testing.assert_close(y_f, y_r, atol=1e-4, rtol=0)
    torch.testing.assert_close(gx_f, gx_r, atol=1e-4, rtol=1e-4)


def fused_kernel(module):
    """The fused kernel `select_kernel` picks for this module's bias-free variants on CPU fp32: ours where it could be
    built (4 channels per head is a shipped width), else SDPA; SDPA for the variants with a bias."""
    if module.pe_kind not in ("none", "dwc"):  # the others have a (B, heads, M, N) bias
        return "sdpa"
    return "ours" if cpu_attention.library() is not None else "sdpa"


def test_record_keeps_positions_and_weights_and_is_off_by_default():
    fast, ref = pair({"dwc_pe": False})
    x = torch.randn(2, 32, *DECLARED)
    fast(x)
    assert fast.recorded is None  # off by default: nothing kept
    fast.record = True
    y = fast(x)
    torch.testing.assert_close(y, ref(x), atol=1e-4, rtol=0)  # same output on the explicit path
    rec = fast.recorded
    groups, heads, n = 4, 8, DECLARED[0] * DECLARED[1]
    assert rec["pos"].shape == rec["reference"].shape == (2, groups, *DECLARED, 2)
    assert rec["attn"].shape == (2, heads, n, n) and not rec["attn"].requires_grad
    torch.testing.assert_close(rec["attn"], ref.last_attn, atol=1e-5, rtol=0)
    # positions in [-1, 1] from two conv layouts (channels-last here, NCHW there): a few fp32 ulps apart, more on some
    # torch releases (1.07e-6 seen with 2.5.1)
    torch.testing.assert_close(rec["pos"], ref.last_pos.reshape(2, groups, *DECLARED, 2), atol=4e-6, rtol=0)
    torch.testing.assert_close(rec["attn"].sum(-1), torch.ones(2, heads, n))


def test_state_dict_is_the_reference_one():
    for _, kwargs in VARIANTS:
        fast, ref = pair(kwargs)
        assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


# ---- reduced precision -----------------------------------------------------------------------------
# Stated tolerances (relative L2 error against fp32, same weights and input; measured over seeds: bf16
# output ~0.5-1.2e-2, value/output projection weight gradients ~0.5-7e-2; fp16 ~10× smaller):
#   output 3e-2 (bf16) / 5e-3 (fp16); weight gradients of the value/output projections 0.15 / 2e-2;
#   input gradient 0.4 / 0.3 -- loose because part of it flows through the bilinear read's derivative
#   in the sampling position, which jumps where a position crosses a pixel boundary: a rounding of the
#   offsets moves it by O(1) there (the reference measures the same, 0.04-0.3 in bf16). A lost or
#   mis-cast gradient is still caught: that error is ~1 or not finite.
PRECISION_VARIANTS = [("dwc_pe", {}), ("table", {"dwc_pe": False}), ("stride2", {"stride": 2})]


def check_low_precision(y, gx, gp, y32, gx32, gp32, tol_y, tol_w, tol_x):
    assert torch.isfinite(y).all() and torch.isfinite(gx).all()
    assert all(torch.isfinite(g).all() for g in gp.values())
    assert rel_err(y, y32) < tol_y
    assert rel_err(gx, gx32) < tol_x
    for key in ("proj_v.weight", "proj_out.weight"):
        assert rel_err(gp[key], gp32[key]) < tol_w, key


@pytest.mark.parametrize("name,kwargs", PRECISION_VARIANTS, ids=[v[0] for v in PRECISION_VARIANTS])
def test_cpu_autocast_bf16_forward_backward(name, kwargs):
    fast, _ = pair(kwargs, channels=64)
    x, weight = torch.randn(2, 64, *DECLARED), torch.randn(2, 64, *DECLARED)
    y32, gx32, gp32 = grads(fast, x, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, gx, gp = grads(fast, x, weight)
    assert y.dtype == torch.bfloat16  # ends in a matmul, as the recipe's 1×1 conv
    check_low_precision(y, gx, gp, y32, gx32, gp32, tol_y=3e-2, tol_w=0.15, tol_x=0.4)


def half_model_check(device):
    fast, _ = pair({}, channels=64)
    x, weight = torch.randn(2, 64, *DECLARED), torch.randn(2, 64, *DECLARED)
    y32, gx32, gp32 = grads(fast, x, weight)
    half = fast.to(device).half()
    y, gx, gp = grads(half, x.to(device).half(), weight.to(device).half())
    assert y.dtype == torch.float16
    cpu = lambda t: t.float().cpu()
    check_low_precision(cpu(y), cpu(gx), {k: cpu(g) for k, g in gp.items()}, y32, gx32, gp32,
                        tol_y=5e-3, tol_w=2e-2, tol_x=0.3)


def test_half_model_on_cpu():
    half_model_check("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_model_and_autocast_on_cuda():
    half_model_check("cuda")
    fast, _ = pair({"dwc_pe": False}, channels=64)
    fast.cuda()
    x, weight = torch.randn(2, 64, *DECLARED, device="cuda"), torch.randn(2, 64, *DECLARED, device="cuda")
    y32, gx32, gp32 = grads(fast, x, weight)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            y, gx, gp = grads(fast, x, weight)
        check_low_precision(y, gx, gp, y32, gx32, gp32, tol_y=3e-2, tol_w=0.15, tol_x=0.4)


# ---- torch.compile ---------------------------------------------------------------------------------
def test_compiled_fullgraph_matches_eager_in_training_and_inference():
    """fullgraph=True (a graph break raises) through AOTAutograd, so the backward graph is traced too; the
    aot_eager backend keeps the test free of a C++ build (inductor compiles it as well: see the report of
    issue 5). Training and no_grad inference are two graphs. Tracing is slow, so only the default variant;
    `torch._dynamo.explain` finds no graph break in any variant either."""
    fast, ref = pair({})
    x, weight = torch.randn(2, 32, *DECLARED), torch.randn(2, 32, *DECLARED)
    torch._dynamo.reset()
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    y_c, gx_c, gp_c = grads(compiled, x, weight)
    y_r, gx_r, gp_r = grads(ref, x, weight)
    torch.testing.assert_close(y_c, y_r, atol=1e-4, rtol=0)
    torch.testing.assert_close(gx_c, gx_r, atol=1e-4, rtol=1e-4)
    gp_c = {k.removeprefix("_orig_mod."): g for k, g in gp_c.items()}  # the compiled wrapper's prefix
    assert gp_c.keys() == gp_r.keys()
    for key in gp_r:
        torch.testing.assert_close(gp_c[key], gp_r[key], atol=1e-4, rtol=1e-4, msg=lambda m: f"{key}: {m}")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), y_r, atol=1e-4, rtol=0)
