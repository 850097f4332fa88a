"""The reference DAttention: the straightforward einsum implementation, kept only to check the fast one.

It is the module's forward as first written (the published recipe's semantics, with its fixes): it builds
the full (B, heads, H·W, Hk·Wk) score matrix and softmaxes it in place of a fused kernel. Its parameters
and state-dict keys are those of `yolov5_dattn.DAttention`, so one state dict loads into both:

    ref = ReferenceDAttention(C, q_size, **kwargs)
    ref.load_state_dict(fast.state_dict())

Nothing here is imported by the package; `scripts/benchmark_attention.py` times it as the baseline.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the C of (B, C, H, W); state-dict key `norm.*` as the recipe's LayerNormProxy."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return rearrange(self.norm(rearrange(x, "b c h w -> b h w c")), "b h w c -> b c h w")


def _normalise(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates 0..size-1 -> [-1, 1]; a one-pixel axis divides by 1 (grid_sample reads it anyway)."""
    return coord.div(max(size - 1, 1)).mul(2.0).sub(1.0)


def _grid(h: int, w: int, start: float, dtype, device) -> torch.Tensor:
    """(h, w, 2) normalised (y, x) grid of `start, start+1, ...` pixel positions."""
    y = _normalise(torch.arange(h, dtype=dtype, device=device) + start, h)
    x = _normalise(torch.arange(w, dtype=dtype, device=device) + start, w)
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), -1)


class ReferenceDAttention(nn.Module):
    """Deformable attention, einsum form. Same arguments, parameters and outputs as `DAttention`.

    Shapes: x (B, C, H, W) -> (B, C, H, W); `last_attn` keeps the (B, heads, H·W, Hk·Wk) weights of the
    latest forward and `last_pos` the (B·g, Hk, Wk, 2) sampling positions.
    """

    def __init__(self, channel: int, q_size: Sequence[int], n_heads: int = 8, n_groups: int = 4,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, stride: int = 1,
                 offset_range_factor: float = 4, use_pe: bool = True, dwc_pe: bool = True,
                 no_off: bool = False, fixed_pe: bool = False, ksize: int = 3, log_cpb: bool = False,
                 kv_size: Optional[Sequence[int]] = None):
        super().__init__()
        self.q_h, self.q_w = (int(s) for s in q_size)
        self.kv_h, self.kv_w = (int(s) for s in kv_size) if kv_size else (self.q_h // stride, self.q_w // stride)
        self.n_heads, self.n_groups = n_heads, n_groups
        self.gc = channel // n_groups
        self.scale = (channel // n_heads) ** -0.5
        self.stride, self.offset_range_factor, self.no_off = stride, offset_range_factor, no_off
        self.kind = ("none" if not use_pe or no_off else "dwc" if dwc_pe else "fixed" if fixed_pe
                     else "log_cpb" if log_cpb else "table")
        self.last_attn = self.last_pos = None

        gc = self.gc
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, ksize, stride, ksize // 2 if ksize != stride else 0, groups=gc),
            _ChannelLayerNorm(gc), nn.GELU(), nn.Conv2d(gc, 2, 1, 1, 0, bias=False))
        if no_off:
            self.conv_offset.requires_grad_(False)
        self.proj_q, self.proj_k, self.proj_v, self.proj_out = (nn.Conv2d(channel, channel, 1) for _ in range(4))
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)
        self.rpe_table = None
        if self.kind == "dwc":
            self.rpe_table = nn.Conv2d(channel, channel, 3, 1, 1, groups=channel)
        elif self.kind == "fixed":
            self.rpe_table = nn.Parameter(torch.zeros(n_heads, self.q_h * self.q_w, self.kv_h * self.kv_w))
        elif self.kind == "log_cpb":
            self.rpe_table = nn.Sequential(nn.Linear(2, 32), nn.ReLU(inplace=True),
                                           nn.Linear(32, n_heads // n_groups, bias=False))
        elif self.kind == "table":
            self.rpe_table = nn.Parameter(torch.zeros(n_heads, self.q_h * 2 - 1, self.q_w * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g, n = self.n_groups, self.n_heads
        q = self.proj_q(x)

        # 1. offsets -> sampling positions (B·g, Hk, Wk, 2), (y, x) in [-1, 1]
        offset = self.conv_offset(rearrange(q, "b (g c) h w -> (b g) c h w", g=g))
        Hk, Wk = offset.shape[-2:]
        reference = _grid(Hk, Wk, 0.5, x.dtype, x.device).expand(B * g, Hk, Wk, 2)
        offset = rearrange(offset, "b p h w -> b h w p")
        if self.no_off:
            pos = reference
        elif self.offset_range_factor >= 0:
            cell = offset.new_tensor([1.0 / max(Hk - 1, 1), 1.0 / max(Wk - 1, 1)])
            pos = offset.tanh() * cell * self.offset_range_factor + reference
        else:
            pos = (offset + reference).clamp(-1.0, 1.0)

        # 2. sample keys/values
        if self.no_off:
            sampled = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
        else:
            sampled = F.grid_sample(x.reshape(B * g, self.gc, H, W), pos.flip(-1).to(x.dtype),
                                    mode="bilinear", align_corners=True)
        sampled = sampled.reshape(B, C, 1, -1)
        k = rearrange(self.proj_k(sampled), "b (n c) 1 s -> b n s c", n=n)
        v = rearrange(self.proj_v(sampled), "b (n c) 1 s -> b n s c", n=n)
        q_heads = rearrange(q, "b (n c) h w -> b n (h w) c", n=n)

        # 3. attend over the full score matrix
        attn = torch.einsum("bnmc,bnsc->bnms", q_heads, k) * self.scale
        bias = self._bias(H, W, Hk, Wk, pos)
        if bias is not None:
            attn = attn + bias.to(attn.dtype)
        attn = attn.softmax(dim=-1)
        self.last_attn, self.last_pos = attn.detach(), pos.detach()
        out = torch.einsum("bnms,bnsc->bnmc", self.attn_drop(attn), v)
        out = rearrange(out, "b n (h w) c -> b (n c) h w", h=H)
        if self.kind == "dwc":
            out = out + self.rpe_table(q)
        return self.proj_drop(self.proj_out(out))

    def _bias(self, H, W, Hk, Wk, pos):
        """(B, heads, H·W, Hk·Wk) additive bias of the 'fixed', 'log_cpb' and 'table' variants, else None."""
        g, n = self.n_groups, self.n_heads
        Bg = pos.shape[0]
        B = Bg // g
        if self.kind in ("none", "dwc"):
            return None
        if self.kind == "fixed":
            table = self.rpe_table
            if table.shape[1:] != (H * W, Hk * Wk):  # resampled for shape probes at other sizes
                t = table.reshape(n * self.q_h * self.q_w, 1, self.kv_h, self.kv_w)
                t = F.interpolate(t, size=(Hk, Wk), mode="bilinear", align_corners=False)
                t = rearrange(t, "(n qh qw) 1 kh kw -> n (kh kw) qh qw", n=n, qh=self.q_h)
                t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
                table = rearrange(t, "n k h w -> n (h w) k")
            return table.unsqueeze(0).expand(B, -1, -1, -1)
        q_grid = _grid(H, W, 0.0, pos.dtype, pos.device).reshape(1, H * W, 1, 2)
        disp = q_grid - pos.reshape(Bg, 1, Hk * Wk, 2)
        if self.kind == "log_cpb":
            d = disp * 4.0
            d = torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8.0)
            bias = self.rpe_table(d.to(self.rpe_table[0].weight.dtype))
            return rearrange(bias, "(b g) m n h -> b (g h) m n", g=g)
        table = rearrange(self.rpe_table, "(g h) y x -> g h y x", g=g)
        table = table.unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(Bg, n // g, *table.shape[-2:])
        bias = F.grid_sample(table, (disp * 0.5).flip(-1).to(table.dtype), mode="bilinear", align_corners=True)
        return bias.reshape(B, n, H * W, Hk * Wk)
