"""FLOP counting that sees the attention: YOLOv5's thop convention and torch's full counter, side by side.

Two conventions, both in FLOPs = 2 × multiply-accumulates:

- **thop** (what YOLOv5 prints): forward hooks on leaf modules with a known rule (Conv2d, BatchNorm,
  Linear, ...). Any tensor op a module runs outside such a leaf is invisible to it: `einsum`, `bmm`,
  `scaled_dot_product_attention`, and the `F.linear` projections of a fused DAttention.
- **full** (`torch.utils.flop_counter.FlopCounterMode`): counts every matmul, convolution and attention
  kernel at the aten level, whichever code path a module takes. Elementwise ops (norms, activations,
  softmax, grid_sample) count 0 in this convention.

Torch's counter has two gaps that we close with our own formulas (passed as `custom_mapping`, so the
result does not depend on the torch version): SDPA kernels it has no formula for count 0 (on CPU,
`aten._scaled_dot_product_flash_attention_for_cpu` in torch releases without its formula;
`..._fused_attention_overrideable` and the MPS math kernel even in torch 2.15), and
`aten.convolution_backward`, whose weight-gradient term ignores `groups` (a depthwise 3×3 conv on 512
channels is over-counted 512× in backward).

Counting runs on a weightless copy of the model on the `meta` device by default: shapes only, no
arithmetic, so a 640-px yolov5l costs about a second and no activation memory.
"""
import contextlib
import functools
import itertools
from copy import deepcopy
from dataclasses import dataclass, field
from math import prod
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolov5_dattn.nn.dattention import DAttention

aten = torch.ops.aten

ImgSize = Union[int, Sequence[int]]


# ---- formulas ------------------------------------------------------------------------------------
def sdpa_flops(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """FLOPs of softmax(q kᵀ) v: the two matmuls, 2·B·Hq·Sq·Sk·(D + Dv).

    Args: q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv); Hq may be a multiple of Hkv (GQA).
    Leading dims beyond B are folded into B (3-D inputs are read as one head).
    """
    *bq, sq, d = q_shape
    *_, sk, dv = v_shape
    if k_shape[-1] != d or k_shape[-2] != sk:
        raise ValueError(f"sdpa_flops: incompatible q/k/v shapes {q_shape}, {k_shape}, {v_shape}")
    return 2 * prod(bq) * sq * sk * (d + dv)


def sdpa_backward_flops(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """FLOPs of the SDPA backward's four matmuls (dV, dP, dQ, dK): twice the forward.

    Recomputing the scores (flash kernels do) is not counted, as torch does not count it either.
    """
    return 2 * sdpa_flops(q_shape, k_shape, v_shape)


def dattention_matmul_flops(batch: int, hw: int, n_sampled: int, channels: int) -> int:
    """Analytic FLOPs of one DAttention's QKᵀ and AV: 2 · 2 · B · HW · Ns · C (heads cancel out)."""
    return 2 * 2 * batch * hw * n_sampled * channels


def _sdpa_formula(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flops(q_shape, k_shape, v_shape)


def _sdpa_backward_formula(grad_out_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flops(q_shape, k_shape, v_shape)


def _conv_flops(x_shape, w_shape, out_shape, transposed: bool) -> int:
    """2 · B · (spatial positions the kernel visits) · prod(weight shape); grouping is already in the weight."""
    spatial = (x_shape if transposed else out_shape)[2:]
    return 2 * x_shape[0] * prod(spatial) * prod(w_shape)


def _conv_backward_formula(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                           _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """Gradient of the input (a transposed conv of grad_out with the weight) plus gradient of the weight.

    The weight gradient pairs each input channel only with the output channels of its own group, so it
    costs 2 · B · (positions) · C_out · (C_in / groups) · k — torch's formula drops the `/ groups`.
    """
    flops = 0
    if output_mask[0]:
        flops += _conv_flops(grad_out_shape, w_shape, x_shape, not transposed)
    if output_mask[1]:
        kernel = prod(w_shape[2:])
        if transposed:  # the forward reads every input position
            positions, c_in, c_out = prod(x_shape[2:]), x_shape[1], grad_out_shape[1]
        else:
            positions, c_in, c_out = prod(grad_out_shape[2:]), x_shape[1], grad_out_shape[1]
        flops += 2 * x_shape[0] * positions * c_out * (c_in // groups) * kernel
    return flops


_SDPA_FORWARD = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                 "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps")
_SDPA_BACKWARD = tuple(f"{name}_backward" for name in _SDPA_FORWARD[:5])


def _flop_formulas() -> dict:
    """Our formulas for every SDPA kernel this torch build has, and the grouped conv backward."""
    formulas = {aten.convolution_backward: _conv_backward_formula}
    for names, formula in ((_SDPA_FORWARD, _sdpa_formula), (_SDPA_BACKWARD, _sdpa_backward_formula)):
        for name in names:
            if hasattr(aten, name):
                formulas[getattr(aten, name)] = formula
    return formulas


FLOP_FORMULAS = _flop_formulas()
ATTENTION_OPS = {aten.bmm, aten.baddbmm, *(op for op in FLOP_FORMULAS if op is not aten.convolution_backward)}


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` with our formulas (use as a context manager)."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


# ---- counting a model ----------------------------------------------------------------------------
def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the `meta` device whose parameters and buffers are never materialised."""
    memo = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return deepcopy(model, memo).to("meta")  # .to() also moves YOLOv5's plain tensor attributes (stride, grids)


def image_shape(imgsz: ImgSize) -> List[int]:
    """`640` or `[640]` -> [640, 640]; `[h, w]` -> [h, w]."""
    size = [int(imgsz)] * 2 if isinstance(imgsz, (int, float)) else [int(s) for s in imgsz]
    return size * 2 if len(size) == 1 else size[:2]


def _in_channels(model: nn.Module) -> int:
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and "ch" in yaml:
        return int(yaml["ch"])
    return next(model.parameters()).shape[1]


def surrogate_loss(output) -> torch.Tensor:
    """Sum of every tensor a YOLOv5 model returns (nested lists/tuples), a stand-in for the real loss.

    A training step's cost is the forward and backward of the network; the loss head is negligible.
    """
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    return sum(surrogate_loss(o) for o in output)


@dataclass
class FlopReport:
    """FLOPs of one forward (or training step) of a model at one input size.

    `by_module` maps module names relative to the model ('' is the model itself, 'model.8.m.0.attention'
    a DAttention) to {aten op name: FLOPs} from the full counter; a module's entry includes its children.
    """
    input_shape: List[int]
    total: int  # full count
    thop: Optional[int]  # thop convention; None when not counted (training step)
    thop_missed: int  # FLOPs the full counter sees in code thop has no rule for
    by_module: Dict[str, Dict[str, int]] = field(default_factory=dict)
    dattention_modules: List[str] = field(default_factory=list)

    def module_flops(self, name: str, ops: Optional[set] = None) -> int:
        """FLOPs inside module `name` (children included), optionally only of the aten ops named in `ops`."""
        counts = self.by_module.get(name, {})
        return sum(v for k, v in counts.items() if ops is None or k in ops)

    @property
    def attention(self) -> int:
        """FLOPs inside DAttention modules (projections, offsets, attention matmuls, position term)."""
        return sum(self.module_flops(name) for name in self.dattention_modules)

    def attention_matmuls_of(self, name: str) -> int:
        """FLOPs of the attention proper (QKᵀ, softmax, AV: `DAttention.attend`) of the DAttention `name`.

        For a module without an `attend` step, its SDPA and bmm ops (the explicit einsum path).
        """
        attend = f"{name}.attend" if name else "attend"
        if attend in self.by_module:
            return self.module_flops(attend)
        return self.module_flops(name, {str(op) for op in ATTENTION_OPS})

    @property
    def attention_matmuls(self) -> int:
        """FLOPs of the attention matmuls (QKᵀ, AV) of all DAttention modules, whichever kernel ran them."""
        return sum(self.attention_matmuls_of(name) for name in self.dattention_modules)

    @property
    def thop_with_attention(self) -> int:
        """thop's figure plus what it cannot see: YOLOv5's convention, attention included."""
        return (self.thop or 0) + self.thop_missed


def _thop_leaf_types() -> tuple:
    from thop.profile import register_hooks
    return tuple(register_hooks)


def _thop_missed(model: nn.Module, by_module: Dict[str, Dict[str, int]]) -> int:
    """FLOPs run by modules thop has no rule for, outside their children (thop only hooks leaves it knows)."""
    known = _thop_leaf_types()
    missed = 0
    for name, module in model.named_modules():
        children = list(module.named_children())
        if not children and isinstance(module, known):
            continue
        own = sum(by_module.get(name, {}).values())
        own -= sum(sum(by_module.get(f"{name}.{c}" if name else c, {}).values()) for c, _ in children)
        missed += own
    return missed


def _relative_names(model: nn.Module, counts: Dict[str, Dict]) -> Dict[str, Dict[str, int]]:
    """FlopCounterMode names modules '<RootClass>.<path>'; strip the root and stringify op keys."""
    root = type(model).__name__
    out = {}
    for name, ops in counts.items():
        if name == "Global":
            continue
        rel = "" if name == root else name[len(root) + 1:] if name.startswith(root + ".") else None
        if rel is not None:
            out[rel] = {str(k): int(v) for k, v in ops.items()}
    return out


@contextlib.contextmanager
def _attend_tracked(model: nn.Module, counter: FlopCounterMode):
    """Count the ops of each `DAttention.attend` call (QKᵀ, AV; SDPA or explicit) under '<module>.attend' too.

    FlopCounterMode attributes an op to every name in its module tracker's `parents`; `attend` is a
    method, not a module, so we add and remove its name around the call. No-op for a DAttention
    without `attend`.
    """
    original = getattr(DAttention, "attend", None)
    if original is None:
        yield
        return
    root = type(model).__name__
    names = {id(m): f"{root}.{n}.attend" if n else f"{root}.attend"
             for n, m in model.named_modules() if isinstance(m, DAttention)}

    @functools.wraps(original)
    def attend(self, *args, **kwargs):
        label = names.get(id(self))
        if label is None:
            return original(self, *args, **kwargs)
        counter.mod_tracker.parents.add(label)
        try:
            return original(self, *args, **kwargs)
        finally:
            counter.mod_tracker.parents.discard(label)

    DAttention.attend = attend
    try:
        yield
    finally:
        DAttention.attend = original


def count_flops(model: nn.Module, imgsz: ImgSize = 640, batch: int = 1, device: Union[str, torch.device] = "meta",
                train_step: bool = False, channels: Optional[int] = None) -> FlopReport:
    """Count the FLOPs of one forward of `model` on a (batch, ch, h, w) input, both conventions at once.

    Args:
        model: a YOLOv5 model (or any module taking one image tensor); it is not modified.
        imgsz: int or [h, w]; must suit the model's strides (YOLOv5: a multiple of 32).
        device: 'meta' (default; shapes only) or a real device, which runs a real forward on a copy.
        train_step: count forward + backward in training mode (surrogate loss) instead; no thop figure.
        channels: input channels; default the YOLOv5 YAML's `ch`, else the first parameter's dim 1.
    Returns: a `FlopReport`. Module names in it are those of `model.named_modules()`.
    """
    h, w = image_shape(imgsz)
    copy = meta_copy(model) if str(device) == "meta" else deepcopy(model).to(device)
    dtype = next(model.parameters()).dtype  # a .half() model gets a half input
    x = torch.zeros(batch, channels or _in_channels(model), h, w, device=device, dtype=dtype)
    thop_flops = None
    if train_step:
        copy.train()
        with flop_counter() as counter:
            surrogate_loss(copy(x)).backward()
    else:
        import thop
        with flop_counter() as counter, _attend_tracked(copy, counter):
            macs, _ = thop.profile(copy, inputs=(x,), verbose=False)  # its own eval, no-grad forward; we listen in
        thop_flops = int(round(2 * macs))
    by_module = _relative_names(copy, counter.get_flop_counts())
    return FlopReport(
        input_shape=[batch, x.shape[1], h, w],
        total=int(counter.get_total_flops()),
        thop=thop_flops,
        thop_missed=0 if train_step else _thop_missed(copy, by_module),
        by_module=by_module,
        dattention_modules=[n for n, m in copy.named_modules() if isinstance(m, DAttention)],
    )
