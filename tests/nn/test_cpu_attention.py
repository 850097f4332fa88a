"""Our CPU attention kernel (yolov5_dattn/nn/cpu_attention.py): exact against a float64 softmax attention,
forward and backward, at ragged sizes and strided inputs; chosen by DAttention exactly where it applies and
matching the einsum reference there; built once and cached; and PyTorch's kernel when it cannot be built."""
import logging

import pytest
import torch

import kernel_variants
from kernel_choice import chosen_kernels
from yolov5_dattn.nn.reference import ReferenceDAttention
from yolov5_dattn import DAttention
from yolov5_dattn.nn import cpu_attention, dattention
from yolov5_dattn.analysis.flops import flop_counter

OUR_OP = "yolov5_dattn.attention_cpu"
# the kernel is built with the system C++ compiler; where there is none, DAttention runs SDPA (tested below)
# and only the tests of the kernel itself cannot run
needs_kernel = pytest.mark.skipif(cpu_attention._compiler() is None, reason="no C++ compiler to build the kernel")


def softmax_attention64(q, k, v, heads):
    """The definition, in float64: (B, M, C), (B, N, C) tokens -> (B, M, C)."""
    split = lambda t: t.double().unflatten(-1, (heads, -1)).transpose(1, 2)
    qh, kh, vh = split(q), split(k), split(v)
    weights = (qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5).softmax(-1)
    return (weights @ vh).transpose(1, 2).flatten(2)


@pytest.fixture(params=["native", *kernel_variants.NAMES])
def kernel_isa(request, monkeypatch):
    """The kernel as built for this CPU (-march=native, OpenMP), without AVX-512 (the code that laptops and AMD
    CPUs before Zen 4 run: its own exp2 and reductions), and without OpenMP (a compiler that has none: Python
    threads share out the pairs). The two variants are built in the background from the start of the session
    (tests/kernel_variants.py)."""
    if request.param != "native":
        monkeypatch.setenv("YOLOV5_DATTN_CACHE", str(kernel_variants.cache_for(request.param)))
        for name, value in kernel_variants.settings(request.param).items():
            monkeypatch.setattr(cpu_attention, name, value)
        cpu_attention.library.cache_clear()
        assert cpu_attention.library() is not None
    assert cpu_attention.library().attention_openmp() == (request.param != "no-openmp")
    yield request.param
    cpu_attention.library.cache_clear()  # the next caller loads the native build again


def ops_run(fn):
    """The ops `fn` ran as the package's FLOP counter saw them, and the counter."""
    with flop_counter() as counter:
        fn()
    return {str(op) for op in counter.get_flop_counts()["Global"]}, counter


def kernels_run(fn):
    """What `select_kernel` chose for each attention `fn` ran, and the ops it ran."""
    with chosen_kernels() as chosen:
        ops, _ = ops_run(fn)
    return chosen, ops


@needs_kernel
@pytest.mark.parametrize("batch,m,n,heads,head_dim", [
    (1, 6400 // 25, 6400 // 25, 8, 16),  # a P3-like square case, shrunk
    (2, 37, 70, 2, 16),  # neither a multiple of the 8-row query block nor of the 64-key tile
    (3, 5, 1, 4, 16),  # one key: a 1×1 key map
    (1, 1, 300, 1, 16),  # one query, keys across two 256-key blocks
    (2, 1600 // 16, 1600 // 16, 8, 32),  # a P4-like case (256 channels, 8 heads of 32), shrunk
    (1, 37, 300, 3, 32),  # ragged at 32 channels per head
    (2, 400 // 4, 400 // 4, 4, 64),  # a P5-like case (512 channels, 8 heads of 64), shrunk
    (1, 21, 300, 2, 64),  # ragged at 64 channels per head
] + [(2, 37, 70, 3, d) for d in (4, 8, 12, 20, 24, 40, 48, 80)]  # the other shipped widths, ragged: some narrower
   + [(1, 130, 300, 8, d) for d in (4, 8, 12)])  # than a vector, whose stores must not touch the next head's channels
def test_kernel_matches_float64_attention_forward_and_backward(batch, m, n, heads, head_dim, kernel_isa):
    torch.manual_seed(0)
    C = head_dim * heads
    q = (torch.randn(batch, m, C) * 2).requires_grad_()
    kv = (torch.randn(batch, n, 2 * C) * 2).requires_grad_()  # k and v are strided halves, as in DAttention
    assert_matches_float64(q, kv, heads)


@needs_kernel
def test_kernel_matches_float64_when_the_maximum_score_moves_across_key_blocks(kernel_isa):
    """The forward keeps each row's running maximum lazily (raised only when a block exceeds it by 2^8): here
    scores rise by ~40 (base 2) per 256-key block for half the rows, so it is raised at every block, and fall
    for the other half, whose maximum is in the first block."""
    torch.manual_seed(4)
    m, n, heads, head_dim = 24, 1000, 2, 16
    q = torch.randn(1, m, heads * head_dim) * 0.1
    q[:, :, ::head_dim] = torch.tensor([1.0, -1.0]).repeat(m // 2).view(1, m, 1)  # channel 0 of each head: ±1
    kv = torch.randn(1, n, 2 * heads * head_dim) * 0.1
    kv[:, :, :heads * head_dim:head_dim] = torch.linspace(0, 400, n).view(1, n, 1)  # keys' channel 0 grows
    assert_matches_float64(q.requires_grad_(), kv.requires_grad_(), heads)


def assert_matches_float64(q, kv, heads):
    """Forward and backward of the kernel on q (B, M, C) and the halves of kv (B, N, 2C) against float64."""
    k, v = kv.chunk(2, dim=-1)
    batch, m, C = q.shape
    grad = torch.randn(batch, m, C)
    assert cpu_attention.supports(q, k, v, heads)

    out = cpu_attention.attention(q, k, v, heads)
    out.backward(grad)
    gq, gkv = q.grad.clone(), kv.grad.clone()
    q.grad = kv.grad = None
    expected = softmax_attention64(q, k, v, heads)
    expected.backward(grad.double())

    assert out.shape == (batch, m, C) and out.is_contiguous()
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(gq.double(), q.grad.double(), atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(gkv.double(), kv.grad.double(), atol=5e-5, rtol=1e-4)


@needs_kernel
def test_kernel_is_deterministic_across_thread_counts(kernel_isa):
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 100, 64) for _ in range(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_attention.attention(q, k, v, 4)
        torch.set_num_threads(max(2, threads))
        many = cpu_attention.attention(q, k, v, 4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)  # each (batch, head) pair is computed the same way by whichever thread


@needs_kernel
@pytest.mark.parametrize("layout", ["transposed", "expanded", "batch-strided"])
def test_backward_reads_a_strided_grad_out_in_place(layout):
    """DAttention's grad_out arrives as the transpose of an NCHW map, and `.sum()` gives a stride-0 one: the kernel
    reads them through their strides, with the gradients of a contiguous copy."""
    torch.manual_seed(3)
    B, M, N, heads = 2, 45, 70, 3
    C = 16 * heads
    q = torch.randn(B, M, C, requires_grad=True)
    k, v = torch.randn(B, N, C, requires_grad=True), torch.randn(B, N, C, requires_grad=True)
    grad = {"transposed": torch.randn(B, C, M).transpose(1, 2),
            "expanded": torch.randn(1, 1, C).expand(B, M, C),
            "batch-strided": torch.randn(B, 2 * M, C)[:, ::2]}[layout]
    assert not grad.is_contiguous()
    out, lse = torch.ops.yolov5_dattn.attention_cpu(q, k, v, heads)
    strided = torch.ops.yolov5_dattn.attention_cpu_backward(grad, q, k, v, out, lse, heads)
    contiguous = torch.ops.yolov5_dattn.attention_cpu_backward(grad.contiguous(), q, k, v, out, lse, heads)
    for a, b in zip(strided, contiguous):
        assert torch.equal(a, b)
    expected = torch.autograd.grad(softmax_attention64(q, k, v, heads), (q, k, v), grad.double())  # fp32 grads
    for a, b in zip(strided, expected):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


def valid_call(B=2, M=5, N=7, C=32, heads=2):
    """Arguments of a good `attention_cpu` call and of its backward, as a dict by argument name."""
    q, k, v = torch.randn(B, M, C), torch.randn(B, N, C), torch.randn(B, N, C)
    return {"q": q, "k": k, "v": v, "heads": heads, "grad_out": torch.randn(B, M, C), "out": torch.randn(B, M, C),
            "lse": torch.randn(B, heads, M)}


BAD_CALLS = {  # what is wrong -> (the argument the error must name, the change)
    "k of another batch": ("k", lambda a: a.update(k=torch.randn(3, 7, 32))),
    "v of another batch": ("v", lambda a: a.update(v=torch.randn(1, 7, 32))),
    "v with other channels": ("v", lambda a: a.update(v=torch.randn(2, 7, 16))),
    "v with more tokens than k": ("v", lambda a: a.update(v=torch.randn(2, 9, 32))),
    "k without tokens": ("k", lambda a: a.update(k=torch.randn(2, 0, 32), v=torch.randn(2, 0, 32))),
    "q in float64": ("q", lambda a: a.update(q=a["q"].double())),
    "k in float16": ("k", lambda a: a.update(k=a["k"].half())),
    "q 2-d": ("q", lambda a: a.update(q=a["q"][0])),
    "q with strided channels": ("q", lambda a: a.update(q=torch.randn(2, 5, 64)[..., ::2])),
    "v channels-first": ("v", lambda a: a.update(v=torch.randn(2, 32, 7).transpose(1, 2))),
    "heads not dividing the channels": ("heads", lambda a: a.update(heads=3)),
    "heads of an uncompiled width": ("heads", lambda a: a.update(heads=16)),  # 2 channels per head
    "no heads": ("heads", lambda a: a.update(heads=0)),
    "grad_out of another shape": ("grad_out", lambda a: a.update(grad_out=torch.randn(2, 4, 32))),
    "lse of another shape": ("lse", lambda a: a.update(lse=torch.randn(2, 5, 2))),
    "out not contiguous": ("out", lambda a: a.update(out=torch.randn(2, 32, 5).transpose(1, 2))),
}


@needs_kernel
@pytest.mark.parametrize("case", BAD_CALLS)
def test_the_operators_refuse_arguments_the_kernel_cannot_take(case):
    """A direct call of the public op with mismatched tensors raises a RuntimeError naming the argument, before
    any pointer reaches the kernel (which would read outside the tensors)."""
    name, change = BAD_CALLS[case]
    args = valid_call()
    change(args)
    forward = lambda: torch.ops.yolov5_dattn.attention_cpu(args["q"], args["k"], args["v"], args["heads"])
    backward = lambda: torch.ops.yolov5_dattn.attention_cpu_backward(
        args["grad_out"], args["q"], args["k"], args["v"], args["out"], args["lse"], args["heads"])
    calls = [("attention_cpu_backward", backward)]
    if name not in ("grad_out", "out", "lse"):
        calls.append(("attention_cpu", forward))
    for op, call in calls:
        with pytest.raises(RuntimeError) as error:
            call()
        assert str(error.value).startswith(f"yolov5_dattn.{op}: {name}"), str(error.value)


@needs_kernel
def test_the_operators_take_the_arguments_they_document():
    """The control for the refusals above: the valid call runs, with strided rows of q, k and v (the halves of one
    projection) and grad_out in any layout."""
    args = valid_call()
    kv = torch.randn(2, 7, 64)
    k, v = kv[..., :32], kv[..., 32:]
    out, lse = torch.ops.yolov5_dattn.attention_cpu(args["q"], k, v, 2)
    assert out.shape == (2, 5, 32) and lse.shape == (2, 2, 5)
    torch.testing.assert_close(out, softmax_attention64(args["q"], k, v, 2).float(), atol=1e-5, rtol=0)
    grad_out = torch.randn(2, 32, 5).transpose(1, 2)
    grads = torch.ops.yolov5_dattn.attention_cpu_backward(grad_out, args["q"], k, v, out, lse, 2)
    assert [tuple(g.shape) for g in grads] == [(2, 5, 32), (2, 7, 32), (2, 7, 32)]


@needs_kernel
def test_flop_counter_counts_the_kernel_like_sdpa():
    q = torch.randn(2, 50, 32, requires_grad=True)
    k, v = torch.randn(2, 70, 32), torch.randn(2, 70, 32)
    ops, counter = ops_run(lambda: cpu_attention.attention(q, k, v, 2).sum().backward())
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts[OUR_OP] == 4 * 2 * 50 * 70 * 32  # QKᵀ and AV
    assert counts["yolov5_dattn.attention_cpu_backward"] == 8 * 2 * 50 * 70 * 32


# every channels-per-head of the shipped models: 8 heads on c_ = c2 * e channels (n-scale P3 has 4, x-scale P5 80)
SHIPPED_HEAD_DIMS = (4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80)
WIDTH_CASES = [(128, {}), (128, {"use_pe": False}), (128, {"no_off": True}), (128, {"stride": 2})] + [
    (8 * d, {}) for d in SHIPPED_HEAD_DIMS if d != 16]


@needs_kernel
@pytest.mark.parametrize("channels,kwargs", WIDTH_CASES,
                         ids=["dwc_pe", "no_pe", "no_off", "stride2"] + [f"{d}_per_head" for d in SHIPPED_HEAD_DIMS
                                                                         if d != 16])
def test_dattention_uses_it_at_every_shipped_width_and_matches_reference(channels, kwargs):
    torch.manual_seed(2)
    fast = DAttention(channels, (10, 12), **kwargs)  # 8 heads: of 16 channels at 128 (the l-scale P3)
    with torch.no_grad():
        fast.conv_offset[3].weight.mul_(4.0)
    ref = ReferenceDAttention(channels, (10, 12), **kwargs)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, channels, 10, 12)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    chosen, ops = kernels_run(lambda: fast(xs[0]).sum().backward())
    assert chosen == ["ours"] and OUR_OP in ops and f"{OUR_OP}_backward" in ops
    ref(xs[1]).sum().backward()
    torch.testing.assert_close(fast(x), ref(x), atol=1e-4, rtol=0)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=1e-4, rtol=1e-4)
    # weight gradients sum over every position and both images, and reach several hundred here: against a
    # float64 run every fp32 form (this kernel, PyTorch's, the reference itself) is off by ~2e-6 of the largest
    # entry, so the bound grows with it (1e-4 at least: proj_k.bias's true gradient is 0, softmax ignores it)
    for (name, p), (_, p_ref) in zip(fast.named_parameters(), ref.named_parameters()):
        if p.grad is not None:
            atol = max(1e-4, 1e-5 * p_ref.grad.abs().max().item())
            torch.testing.assert_close(p.grad, p_ref.grad, atol=atol, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case,kernel", [("6 channels per head", "sdpa"), ("bf16 autocast", "sdpa"),
                                         ("table bias", "sdpa"), ("record", "explicit"), ("dropout", "sdpa")])
def test_dattention_uses_pytorch_where_the_kernel_does_not_apply(case, kernel):
    channels = 48 if case.startswith("6") else 128  # 6 channels per head: no shipped model has it, none compiled
    kwargs = {"dwc_pe": False} if case == "table bias" else {"attn_drop": 0.5} if case == "dropout" else {}
    module = DAttention(channels, (6, 6), **kwargs)
    module.record = case == "record"
    x = torch.randn(1, channels, 6, 6)
    if case == "bf16 autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            chosen, ops = kernels_run(lambda: module(x))
    else:
        with torch.no_grad():
            chosen, ops = kernels_run(lambda: module(x))
    assert chosen == [kernel] and OUR_OP not in ops


@needs_kernel
def test_switched_off_dattention_falls_back_to_sdpa_with_the_same_result(monkeypatch):
    torch.manual_seed(3)
    module = DAttention(128, (8, 8))
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        chosen_on, ops_on = kernels_run(lambda: module(x))
        y_kernel = module(x)
        monkeypatch.setattr(cpu_attention, "library", lambda: None)
        chosen_off, ops_off = kernels_run(lambda: module(x))
        y_sdpa = module(x)
    assert chosen_on == ["ours"] and chosen_off == ["sdpa"] and OUR_OP in ops_on and OUR_OP not in ops_off
    torch.testing.assert_close(y_kernel, y_sdpa, atol=1e-5, rtol=0)


@needs_kernel
def test_build_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOV5_DATTN_CACHE", str(tmp_path))
    first = cpu_attention.build()
    stamp = first.stat().st_mtime_ns
    second = cpu_attention.build()
    assert first == second and first.parent == tmp_path and second.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", first.name, first.name + ".sha256"]  # no partial


def test_without_a_compiler_it_logs_once_and_dattention_still_runs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("YOLOV5_DATTN_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(cpu_attention, "_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        cpu_attention.build()
    cpu_attention.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cpu_attention.__name__):
            assert cpu_attention.library() is None
            module = DAttention(128, (4, 4))
            with torch.no_grad():
                chosen, ops = kernels_run(lambda: module(torch.randn(1, 128, 4, 4)))
        assert chosen == ["sdpa"] and OUR_OP not in ops
        assert len([r for r in caplog.records if "CPU attention kernel unavailable" in r.message]) == 1
        assert list(tmp_path.iterdir()) == []
    finally:
        cpu_attention.library.cache_clear()  # the next caller loads the real build again


@needs_kernel
def test_compile_failure_names_the_compiler_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOV5_DATTN_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_attention, "FLAGS", cpu_attention.FLAGS + ["-DDELIBERATE_ERROR", "-include", "/nonexistent.h"])
    with pytest.raises(RuntimeError, match="failed:"):
        cpu_attention.build()
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no library, record or partial file


def test_traced_graphs_keep_pytorch_kernel():
    """TorchScript tracing (YOLOv5's torchscript export) and ONNX export record PyTorch's kernel, which they can
    represent; the traced module gives the eager output."""
    module = DAttention(128, (6, 6)).eval()
    x = torch.randn(1, 128, 6, 6)
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
        eager = module(x)
        assert "yolov5_dattn::attention_cpu" not in str(traced.graph) and "scaled_dot_product_attention" in str(traced.graph)
        torch.testing.assert_close(traced(x), eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case,expected", [(f"{d} per head", "ours") for d in SHIPPED_HEAD_DIMS] + [
    ("6 per head", "sdpa"), ("128 per head", "sdpa"),
    ("float64", "sdpa"), ("dropout", "sdpa"), ("bias, no gradient", "sdpa"), ("bias needs its gradient", "explicit"),
    ("bias needs its gradient, under no_grad", "sdpa"), ("record", "explicit"), ("kernel switched off", "sdpa")])
def test_select_kernel_decides_from_explicit_conditions(case, expected, monkeypatch):
    if expected == "ours" and cpu_attention.library() is None:
        pytest.skip("no kernel could be built here (no C++ compiler)")
    dim = int(case.split()[0]) if case.endswith(" per head") else 16
    heads, dtype = 4, torch.float64 if case == "float64" else torch.float32
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, L, C) -> (B, heads, L, c), as in DAttention
    q, k, v = (split(torch.randn(2, L, heads * dim, dtype=dtype)) for L in (12, 9, 9))
    bias = torch.zeros(2, heads, 12, 9, requires_grad=case.startswith("bias needs")) if "bias" in case else None
    if case == "kernel switched off":
        monkeypatch.setattr(cpu_attention, "library", lambda: None)
    kwargs = {"bias": bias, "dropout": 0.1 if case == "dropout" else 0.0, "record": case == "record"}
    with torch.set_grad_enabled(not case.endswith("under no_grad")):
        assert dattention.select_kernel(q, k, v, **kwargs) == expected
