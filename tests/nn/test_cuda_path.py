"""DAttention's CUDA path, checked on the CPU where the same code runs: the kernel choice for a CUDA tensor (fake
CUDA tensors), fp32 sampling positions under autocast (bf16 on the CPU), no host-to-device copy in a forward,
channels-last inputs, meta tensors, and torch.compile's graph capture.

What needs a GPU (fp16 autocast, SDPA's CUDA backends, inductor's GPU code) is `scripts/check_cuda.py`.
"""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from yolov5_dattn.nn import attention_kernel_set_to, cpu_attention, dattention
from yolov5_dattn.nn.dattention import DAttention

CUDA = torch.device("cuda", 0)
# every position term, the unbounded offsets and the offset-free ablation
VARIANTS = {"dwc": {}, "none": {"use_pe": False}, "table": {"dwc_pe": False}, "fixed": {"dwc_pe": False, "fixed_pe": True},
            "log_cpb": {"dwc_pe": False, "log_cpb": True}, "unbounded": {"offset_range_factor": -1},
            "no_off": {"no_off": True, "stride": 2}}


def _module(kind: str, channels: int = 32, size=(8, 8)) -> DAttention:
    torch.manual_seed(0)
    return DAttention(channels, size, n_heads=4, n_groups=2, **VARIANTS[kind])


def _heads(L: int, device: torch.device, mode=None, heads: int = 4, dim: int = 16) -> torch.Tensor:
    """(2, heads, L, dim) as `attend` receives it, on `device` (fake when `mode` is given)."""
    t = torch.randn(2, L, heads * dim).unflatten(-1, (heads, dim)).transpose(1, 2)
    return t if mode is None else FakeTensor(mode, t.to("meta"), device)


class _HostToDevice(TorchDispatchMode):
    """Records every op that takes a CPU tensor and returns a tensor on another device (a host-to-device copy)."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, (tuple, list)) else [out]
        if any(a.device.type == "cpu" for a in ins) and any(
                isinstance(o, torch.Tensor) and o.device.type != "cpu" for o in outs):
            self.copies.append(str(func))
        return out


# ---- the fused CPU kernel and CUDA tensors ------------------------------------------------------------------------
@pytest.mark.parametrize("switch", ["auto", "ours"])
def test_the_fused_cpu_kernel_is_never_chosen_for_a_cuda_tensor(switch):
    mode = FakeTensorMode()
    q, k, v = _heads(12, CUDA, mode), _heads(9, CUDA, mode), _heads(9, CUDA, mode)
    assert q.device == CUDA and q.dtype == torch.float32  # everything else as the CPU kernel wants it
    with attention_kernel_set_to(switch), mode:
        assert dattention.select_kernel(q, k, v) == "sdpa"
        tokens = [t.transpose(1, 2).flatten(2) for t in (q, k, v)]
        assert not cpu_attention.supports(*tokens, heads=4)
    # control: the same shapes on the CPU take it, so the answer above is the device's
    if cpu_attention.library() is None:
        pytest.skip("no CPU kernel could be built here (no C++ compiler): the control cannot run")
    with attention_kernel_set_to(switch):
        assert dattention.select_kernel(_heads(12, None), _heads(9, None), _heads(9, None)) == "ours"


def test_sampling_positions_on_a_cuda_device_are_fp32_and_made_there():
    """Positions from fp16 queries (what autocast gives on a GPU) are fp32 and on the GPU, and nothing in their
    computation copies from host memory (such a copy waits for the GPU's queue, once per forward)."""
    mode = FakeTensorMode()
    for kind in ("dwc", "unbounded", "no_off"):
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float16)  # an fp16 module made on the device (no conversion of fake tensors)
        try:
            with mode, torch.device(CUDA):
                module = _module(kind)
                q = torch.empty(2, 32, 8, 12)
                spy = _HostToDevice()
                with spy:
                    pos, reference = module.sampling_positions(q)
        finally:
            torch.set_default_dtype(default)
        assert q.dtype == module.proj_q.weight.dtype == torch.float16
        assert (pos.device, pos.dtype, reference.dtype) == (CUDA, torch.float32, torch.float32), kind
        hk, wk = (4, 6) if kind == "no_off" else (8, 12)
        assert pos.shape == (4, hk, wk, 2)
        assert spy.copies == [], (kind, spy.copies)
    # control: the spy sees a tensor made from a Python list on that device
    with mode, _HostToDevice() as spy:
        torch.empty(2, device=CUDA).new_tensor([1.0, 2.0])
    assert spy.copies


# ---- autocast (bf16 on the CPU: the same casts as fp16 on a GPU) ----------------------------------------------------
@pytest.mark.parametrize("kind", list(VARIANTS))
def test_autocast_bf16_matches_fp32_and_keeps_positions_fp32(kind):
    module = _module(kind).train()
    x = torch.randn(2, 32, 8, 8)
    module.record = True  # keeps the positions; the attention itself runs on the explicit path here
    ref = module(x)
    ref_pos = module.recorded["pos"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    pos = module.recorded["pos"]
    assert out.dtype == torch.bfloat16 and pos.dtype == torch.float32
    scale = ref.abs().max()
    assert (out.float() - ref).abs().max() <= 0.03 * scale, kind
    assert (pos - ref_pos).abs().max() <= 0.02, kind  # bf16 offsets: a fraction of a key cell (2/7 here)

    module.record = False  # the kernel a training step runs, with its gradients
    grads = {}
    for amp in (False, True):
        module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = module(x)
        (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads[amp] = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and grads[False]
    cosine = lambda a, b: float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
    every = {amp: torch.cat([g.flatten() for g in grads[amp].values()]) for amp in grads}
    assert torch.isfinite(every[True]).all() and cosine(every[True], every[False]) >= 0.95, kind
    # each parameter with a real gradient (proj_k.bias's is zero in exact arithmetic: a key bias cancels in the
    # softmax). Measured here: >= 0.99 for the position terms, 0.91 for the offsets of `unbounded` (clamped raw
    # offsets: bf16's error in them moves positions across bilinear kinks)
    for name, g in grads[False].items():
        if g.norm() >= 1e-3 * every[False].norm():
            assert cosine(grads[True][name], g) >= 0.8, (kind, name)


# ---- layouts and shapes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dwc", "table", "no_off"])
def test_a_channels_last_input_gives_the_same_output_and_gradients(kind):
    """ultralytics moves a model and its inputs to channels-last on CUDA (`channels_last=True`)."""
    module = _module(kind)
    x = torch.randn(2, 32, 8, 8)
    outs, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.clone(memory_format=layout).requires_grad_()
        y = module(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert xi.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_meta_tensors_give_every_variants_shapes_forward_and_backward(kind):
    module = _module(kind).to("meta")
    for shape in ((2, 32, 8, 8), (1, 32, 6, 10)):
        x = torch.empty(shape, device="meta", requires_grad=True)
        y = module(x)
        assert (y.device.type, tuple(y.shape)) == ("meta", shape)
        y.sum().backward()
        assert x.grad.shape == x.shape and module.proj_q.weight.grad.shape == module.proj_q.weight.shape
        module.zero_grad()


# ---- torch.compile -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,attention", [("dwc", "scaled_dot_product_attention"), ("log_cpb", "softmax")])
def test_torch_compile_captures_the_module_as_one_graph_with_pytorchs_attention(kind, attention):
    """Dynamo traces the whole forward (`fullgraph=True`: no graph break) and AOTAutograd its backward, giving the
    eager numbers; the attention is PyTorch's (SDPA; log_cpb's bias needs its gradient in training: the explicit
    form), never our CPU operator. Inductor's code generation is left to scripts/check_cuda.py (on this 2-core CPU it takes minutes);
    `aot_eager` runs the captured graphs as they are."""
    from torch._dynamo.backends.registry import lookup_backend
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, inputs)

    module = _module(kind)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    weight = torch.linspace(-1, 1, x.numel()).view_as(x)
    (module(x) * weight).sum().backward()
    eager, eager_grad = module(x).detach(), x.grad.clone()
    x.grad = None
    torch._dynamo.reset()
    compiled = torch.compile(module, backend=backend, fullgraph=True, dynamic=False)
    y = compiled(x)
    (y * weight).sum().backward()
    torch.testing.assert_close(y.detach(), eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, eager_grad, atol=1e-5, rtol=1e-5)
    code = graphs[0].code
    assert len(graphs) == 1 and attention in code and "attention_cpu" not in code
