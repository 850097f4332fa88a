"""Deformable attention of "Vision Transformer with Deformable Attention" (Xia et al., CVPR 2022).

Every query attends to a small set of keys sampled at *learned* positions:

1. offsets:  a light network looks at the queries of each offset group and predicts, for every
             point of a reference grid of key positions, a 2-D shift (bounded by tanh);
2. sample:   keys and values are read from the input at the shifted positions with bilinear
             interpolation (`grid_sample`, or the same from Gather for deployment: `sampler_switch`),
             one set of positions per offset group;
3. attend:   ordinary multi-head softmax attention of all queries over the sampled keys,
             plus a relative-position term (LePE depthwise conv, or a bias).

With `query_ratio` ρ < 1 (sparse queries, `query_selection`), a light scorer picks the ceil(ρ·H·W) most salient
query positions before step 3 and only those attend; the others get no attention term.

Coordinates are normalised to [-1, 1] as `grid_sample(align_corners=True)` expects, stored (y, x).
Parameter names follow the published YOLOv5 recipe so that weights move between the two.

How it is computed (the parameters stay the recipe's 1×1 `Conv2d`s; their weights are used as matrices):
the four projections run as matmuls on a token layout (B, H·W, C), k and v as one matmul, and step 3 is a
fused attention kernel that never holds the (H·W)×(Hk·Wk) score matrix:
`torch.nn.functional.scaled_dot_product_attention`, or on CPU in fp32, at the head widths it is compiled for
(`cpu_attention.HEAD_DIMS`), our own (`cpu_attention`), because PyTorch's is slower there. That matrix is what
made the straightforward form (kept as `yolov5_dattn/nn/reference.py`) slow and, at P4/P3, out of memory;
`scripts/benchmark_attention.py` measures both (results: docs/performance.md).
"""
from typing import Optional, Sequence, Tuple, Union

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .kernel_switch import attention_kernel
from .layernorm import LayerNormProxy
from .query_selection import QueryScorer, check_query_ratio
from .sampler_switch import bilinear

try:
    from . import cpu_attention
except (ImportError, AttributeError):  # a torch without torch.utils.flop_counter (< 2.1): PyTorch's kernel only
    cpu_attention = None


# A map size: a Python int, or while `torch.jit.trace` / the ONNX exporter records the model a 0-dim tensor
# (what `x.shape[i]` returns then). Everything computed from sizes below accepts both, so that an export
# computes it in the graph from the input's shape (a `--dynamic` model then runs at any size and batch)
# instead of freezing the export size into constants. Splitting a dimension is written as `reshape` with sizes
# read from shapes, not `unflatten`: the exporter gives unflatten's result the traced (static) shape.
Size = Union[int, torch.Tensor]


def _extent(size: Size, device: Optional[torch.device] = None) -> Union[int, torch.Tensor]:
    """`size - 1`, at least 1: what a coordinate 0..size-1 is normalised by.

    A map one pixel wide has no extent to normalise by; `grid_sample` reads its only pixel for any
    coordinate there, so dividing by 1 instead of 0 keeps everything finite and changes nothing else.

    Returns: an int, or for a traced size a (1,) float32 tensor on `device`.
    """
    if isinstance(size, torch.Tensor):
        # traced: the last index of a float32 Range over the size. Arithmetic on the traced integer itself would
        # come out as float64 constants in a static export (and OpenCV's DNN has no integer Clip).
        return torch.arange(size, dtype=torch.float32, device=device)[-1:].clamp(min=1.0)
    return max(size - 1, 1)


def _normalise(coord: torch.Tensor, size: Size) -> torch.Tensor:
    """Map pixel coordinates 0..size-1 to [-1, 1] (align_corners=True convention)."""
    return coord.div(_extent(size, coord.device)).mul(2.0).sub(1.0)


def reference_points(h: Size, w: Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Centres of an h×w grid of key cells, normalised as in DAT (`linspace(0.5, n-0.5, n)`).

    Returns: (h, w, 2) in (y, x) order.
    """
    # arange + 0.5 is that linspace exactly (its step is 1), and unlike linspace it exports as a float32
    # Range over the traced size rather than a float64 constant
    y = torch.arange(h, dtype=dtype, device=device).add(0.5)
    x = torch.arange(w, dtype=dtype, device=device).add(0.5)
    ref_y, ref_x = torch.meshgrid(_normalise(y, h), _normalise(x, w), indexing="ij")
    return torch.stack((ref_y, ref_x), -1)


def query_points(h: Size, w: Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel positions of an h×w query map, normalised to [-1, 1].

    Returns: (h, w, 2) in (y, x) order.
    """
    y = torch.arange(h, dtype=dtype, device=device)
    x = torch.arange(w, dtype=dtype, device=device)
    q_y, q_x = torch.meshgrid(_normalise(y, h), _normalise(x, w), indexing="ij")
    return torch.stack((q_y, q_x), -1)


class DAttention(nn.Module):
    """Deformable multi-head attention over a (B, C, H, W) feature map.

    Args:
        channel: C, divisible by n_heads and n_groups.
        q_size: (h, w) the feature map the block is declared for. Only `fixed_pe` depends on it;
            every other variant runs at any size.
        n_heads: attention heads; head_dim = C // n_heads.
        n_groups: offset groups; each group of C // n_groups channels gets its own sampling points.
        attn_drop, proj_drop: dropout on the attention weights / on the output.
        stride: the reference grid of keys is the query map downsampled by `stride`.
        offset_range_factor: offsets are bounded to ±factor key cells (tanh); < 0 means unbounded
            offsets whose positions are clamped to the map.
        use_pe: add a relative-position term. Which one: `dwc_pe` (a depthwise 3×3 conv of q added to
            the output, LePE), else `fixed_pe` (a free (heads, Hq·Wq, Hk·Wk) bias), else `log_cpb`
            (an MLP of log-spaced displacements), else a (heads, 2h-1, 2w-1) table sampled at each
            query-key displacement.
        no_off: no offsets; keys are the input average-pooled by `stride` (an ablation of DAT).
        ksize: kernel of the depthwise conv of the offset network.
        kv_size: (h, w) of the key grid for `fixed_pe`; defaults to q_size // stride.
        query_ratio: ρ in (0, 1], the share of query positions that attend (Sparse DETR's idea): a scorer
            (`query_selection.QueryScorer`, key `query_scorer`) ranks the H·W positions from the input and the
            k = ceil(ρ·H·W) best attend, their outputs gated by 2·sigmoid(score); the others get no attention
            term (they keep the position term and the output projection's bias). Keys, values and offsets stay
            dense. 1.0 (the default): every query attends and the module has no scorer (same parameters and
            state-dict keys as without the argument).

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)

    Which attention kernel runs (decided by `select_kernel`, once per call):
        - `dwc_pe` (the default), no position term, `no_off`: a fused kernel, memory O(H·W·C), never the
          score matrix: on CPU in fp32 at a head width in `cpu_attention.HEAD_DIMS` our own
          (`cpu_attention`, compiled on first use; faster there than PyTorch's), else
          `scaled_dot_product_attention`;
        - `table`, `fixed_pe`, `log_cpb`: their bias is itself a (B, heads, H·W, Hk·Wk) tensor. When no
          gradient has to reach it (inference, `torch.no_grad`) it goes to the fused kernel as an additive
          float mask; when it needs one (training), the explicit path (scores -> softmax -> weights),
          because the fused CPU kernel cannot return the mask's gradient;
        - `record = True`: the explicit path, which is where the weights to record exist.

    Precision: sampling positions and bilinear reads are computed in fp32 whatever the input dtype
    (in bf16 a position on an 80-px map would be off by up to a third of a pixel); everything else
    runs in the input's dtype or under `torch.autocast`.

    Set `record = True` to keep, after each forward, the sampling positions and attention weights
    in `self.recorded` (see `forward`); off by default, when it costs nothing.
    """

    def __init__(self, channel: int, q_size: Sequence[int], n_heads: int = 8, n_groups: int = 4,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, stride: int = 1,
                 offset_range_factor: float = 4, use_pe: bool = True, dwc_pe: bool = True,
                 no_off: bool = False, fixed_pe: bool = False, ksize: int = 3, log_cpb: bool = False,
                 kv_size: Optional[Sequence[int]] = None, query_ratio: float = 1.0):
        super().__init__()
        query_ratio = check_query_ratio(query_ratio)
        if not (isinstance(n_heads, int) and isinstance(n_groups, int) and n_heads > 0 and n_groups > 0):
            raise ValueError(f"DAttention: n_heads ({n_heads!r}) and n_groups ({n_groups!r}) must be positive "
                             f"integers: e.g. n_heads 8, n_groups 4")
        if channel % n_heads or channel % n_groups or n_heads % n_groups:
            raise ValueError(
                f"DAttention: channels ({channel}) must be divisible by n_heads ({n_heads}) and "
                f"n_groups ({n_groups}), and n_heads by n_groups: choose a width or n_heads/n_groups that divide")
        self.q_h, self.q_w = (int(s) for s in q_size)
        self.kv_h, self.kv_w = (int(s) for s in kv_size) if kv_size else (self.q_h // stride, self.q_w // stride)
        self.nc = channel
        self.n_heads, self.n_groups = n_heads, n_groups
        self.n_head_channels = channel // n_heads
        self.n_group_channels = channel // n_groups
        self.n_group_heads = n_heads // n_groups
        self.scale = self.n_head_channels ** -0.5
        self.stride, self.ksize = stride, ksize
        self.offset_range_factor = offset_range_factor
        self.no_off = no_off
        self.use_pe = use_pe and not no_off
        self.dwc_pe, self.fixed_pe, self.log_cpb = dwc_pe, fixed_pe, log_cpb
        self.record = False
        self.recorded = None
        self.query_ratio = query_ratio
        if query_ratio < 1.0:  # only then: a dense module keeps its parameters and state-dict keys
            self.query_scorer = QueryScorer(channel, query_ratio)

        gc = self.n_group_channels
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, ksize, stride, ksize // 2 if ksize != stride else 0, groups=gc),
            LayerNormProxy(gc),
            nn.GELU(),
            nn.Conv2d(gc, 2, 1, 1, 0, bias=False),
        )
        if no_off:
            self.conv_offset.requires_grad_(False)

        self.proj_q = nn.Conv2d(channel, channel, 1)
        self.proj_k = nn.Conv2d(channel, channel, 1)
        self.proj_v = nn.Conv2d(channel, channel, 1)
        self.proj_out = nn.Conv2d(channel, channel, 1)
        # not in place: the recipe's inplace dropout breaks autograd when attn is reused
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

        self.rpe_table = None
        if self.use_pe:
            if dwc_pe:
                self.rpe_table = nn.Conv2d(channel, channel, 3, 1, 1, groups=channel)
            elif fixed_pe:
                self.rpe_table = nn.Parameter(torch.zeros(n_heads, self.q_h * self.q_w, self.kv_h * self.kv_w))
                nn.init.trunc_normal_(self.rpe_table, std=0.01)
            elif log_cpb:
                self.rpe_table = nn.Sequential(nn.Linear(2, 32), nn.ReLU(inplace=True),
                                               nn.Linear(32, self.n_group_heads, bias=False))
            else:
                self.rpe_table = nn.Parameter(torch.zeros(n_heads, self.q_h * 2 - 1, self.q_w * 2 - 1))
                nn.init.trunc_normal_(self.rpe_table, std=0.01)

    @property
    def pe_kind(self) -> str:
        """Which relative-position term is in use: 'dwc', 'fixed', 'log_cpb', 'table' or 'none'."""
        if not self.use_pe:
            return "none"
        return "dwc" if self.dwc_pe else "fixed" if self.fixed_pe else "log_cpb" if self.log_cpb else "table"

    @property
    def size_fixed(self) -> bool:
        """True when the module only matches its parameters at the declared `q_size` (fixed_pe)."""
        return self.pe_kind == "fixed"

    # ---- 1. offsets ---------------------------------------------------------------------------
    def sampling_positions(self, q: torch.Tensor):
        """Where each offset group reads its keys.

        Args:
            q: projected queries (B, C, H, W).
        Returns:
            pos: (B·g, Hk, Wk, 2) fp32 sampling positions, (y, x) in [-1, 1] (beyond it when unclamped);
            reference: (B·g, Hk, Wk, 2) fp32, the undeformed key grid.
        """
        B, _, H, W = q.shape
        # channels-last (one copy, as the NCHW grouping was for B > 1): oneDNN's depthwise conv is faster on it and
        # LayerNormProxy's permutes become views (docs/performance.md has the module's timings)
        q_groups = (q.reshape(B, self.n_groups, -1, H, W).permute(0, 1, 3, 4, 2).flatten(0, 1)  # (B·g, H, W, c)
                    .permute(0, 3, 1, 2))  # (B·g, c, H, W)
        offset = self.conv_offset(q_groups).float().permute(0, 2, 3, 1)  # (B·g, Hk, Wk, 2)
        Hk, Wk = offset.shape[1:3]
        reference = reference_points(Hk, Wk, torch.float32, q.device).expand_as(offset)
        if self.no_off:
            return reference, reference
        if self.offset_range_factor >= 0:
            # one key cell is 2/(n-1) in normalised units; tanh bounds the shift to ±factor half-cells
            if isinstance(Hk, torch.Tensor):  # traced sizes: computed in the graph
                cell = torch.cat((_extent(Hk, offset.device), _extent(Wk, offset.device))).reciprocal()
            else:  # filled on the device: a tensor made from a Python list is a host-to-device copy, which on a
                # GPU waits for every kernel queued before it (once per forward)
                cell = torch.stack((offset.new_full((), 1.0 / _extent(Hk)), offset.new_full((), 1.0 / _extent(Wk))))
            return offset.tanh() * cell * self.offset_range_factor + reference, reference
        return (offset + reference).clamp(-1.0, 1.0), reference

    # ---- 2. sample ----------------------------------------------------------------------------
    def sample_keys(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Bilinearly read the input at the sampling positions, each group at its own.

        Args:
            x: (B, C, H, W) input; pos: (B·g, Hk, Wk, 2).
        Returns:
            (B, C, Hk·Wk) sampled features, in x's dtype (the bilinear read itself is fp32).
        """
        B, C, H, W = x.shape
        if self.no_off:
            sampled = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
        else:
            # grid_sample, or its Gather form for deployment (`sampler_switch`)
            sampled = bilinear(x.reshape(B * self.n_groups, self.n_group_channels, H, W).float(),
                               pos.flip(-1).float()).to(x.dtype)  # the grid is (x, y)
        return sampled.reshape(B, C, -1)

    # ---- relative-position bias ---------------------------------------------------------------
    def position_bias(self, H: int, W: int, pos: torch.Tensor) -> Optional[torch.Tensor]:
        """Additive attention bias for the 'fixed', 'log_cpb' and 'table' variants, else None.

        Args:
            H, W: query map; pos: (B·g, Hk, Wk, 2) sampling positions.
        Returns:
            (B, heads, H·W, Hk·Wk) or None.
        """
        kind = self.pe_kind
        if kind in ("none", "dwc"):
            return None
        Bg, Hk, Wk, _ = pos.shape
        B = Bg // self.n_groups
        if kind == "fixed":
            table = self.rpe_table
            if table.shape[1:] != (H * W, Hk * Wk):
                table = self._resized_fixed_table(H, W, Hk, Wk)
            return table.unsqueeze(0).expand(B, -1, -1, -1)
        # displacement from every query to every sampled key, normalised coordinates (y, x)
        q_grid = query_points(H, W, pos.dtype, pos.device).reshape(1, -1, 1, 2)
        disp = q_grid - pos.reshape(Bg, 1, -1, 2)  # (B·g, HW, Ns, 2)
        if kind == "log_cpb":
            d = disp * 4.0  # d in [-8, 8]; log-spacing as Swin-V2, scaled so |d| = 8 -> 1
            d = torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8.0)
            bias = self.rpe_table(d.to(self.rpe_table[0].weight.dtype))  # (B·g, HW, Ns, heads/g)
            # (b g) m n h -> b (g h) m n
            return bias.reshape(B, self.n_groups, H * W, -1, self.n_group_heads).permute(0, 1, 4, 2, 3).flatten(1, 2)
        # 'table': the (2h-1)×(2w-1) table spans displacements in [-2, 2]; read it by interpolation
        table = rearrange(self.rpe_table, "(g h) y x -> g h y x", g=self.n_groups)
        table = table.unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(Bg, self.n_group_heads, *table.shape[-2:])
        bias = bilinear(table, (disp * 0.5).flip(-1).to(table.dtype))
        return bias.reshape(B, self.n_heads, H * W, -1)

    def _resized_fixed_table(self, H: int, W: int, Hk: int, Wk: int) -> torch.Tensor:
        """The fixed_pe table resampled to another query/key map size.

        Only used so that shape probes (YOLOv5 builds models with a 256-px image, profiles them at 32)
        run; training and inference at a size other than `q_size` are refused by `yolov5_dattn.hosts.yolov5.fmap`.
        Returns: (heads, H·W, Hk·Wk).
        """
        t = self.rpe_table.reshape(self.n_heads * self.q_h * self.q_w, 1, self.kv_h, self.kv_w)
        t = F.interpolate(t, size=(Hk, Wk), mode="bilinear", align_corners=False)  # key axes
        t = rearrange(t, "(n qh qw) 1 kh kw -> n (kh kw) qh qw", n=self.n_heads, qh=self.q_h)
        t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # query axes
        return rearrange(t, "n k h w -> n (h w) k")

    # ---- 3. attend ----------------------------------------------------------------------------
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Multi-head softmax attention with the kernel `select_kernel` names (see the class docstring).

        Args:
            q: (B, heads, M, c); k, v: (B, heads, N, c); bias: (B, heads, M, N) additive, or None.
        Returns:
            out (B, heads, M, c) and, on the explicit path only, the weights (B, heads, M, N).
        """
        drop = self.attn_drop.p if self.training else 0.0
        kernel = select_kernel(q, k, v, bias=bias, dropout=drop, record=self.record)
        if kernel == "explicit":
            return self._attend_explicit(q, k, v, bias)
        if kernel == "ours":
            out = cpu_attention.attention(*(_tokens(t) for t in (q, k, v)), self.n_heads)
            return out.unflatten(-1, (self.n_heads, -1)).transpose(1, 2), None
        # detached: no gradient is wanted here, and a mask that requires one sends SDPA to its math path
        mask = None if bias is None else bias.detach().to(q.dtype)
        # SDPA's default scale is head_dim ** -0.5, which is self.scale (and its `scale=` needs torch >= 2.1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop), None

    def _attend_explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scores -> softmax -> weights, for `record` and for a bias that needs its gradient. Shapes as `attend`."""
        scores = torch.matmul(q * self.scale, k.transpose(-1, -2))
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        attn = scores.softmax(dim=-1)
        return torch.matmul(self.attn_drop(attn), v), attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns: (B, C, H, W).

        With `record` on, `self.recorded` holds detached tensors: `pos` and `reference`
        (B, g, Hk, Wk, 2) in normalised (y, x), and `attn` (B, heads, H·W, Hk·Wk); with `query_ratio` < 1 also
        `selected` (B, k), the positions that attended (the other rows of `attn` are zero).
        """
        B, C, H, W = x.shape
        n = self.n_heads
        # (B, HW, C) tokens: the layout the fused kernel reads without copying (from (B, C, HW) it would copy)
        q = F.linear(x.flatten(2).transpose(1, 2), _matrix(self.proj_q), self.proj_q.bias)  # (B, HW, C)
        # the map for the two depthwise convs (offsets, dwc_pe) is a channels-last view of the tokens, because
        # oneDNN's channels-last depthwise conv is faster than its NCHW one for B > 1. At B = 1 PyTorch takes that
        # view for NCHW-strided and its conv on it is the slower one, so there it gets an NCHW copy.
        q_map = q.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W) view
        if B == 1:
            q_map = q_map.contiguous()

        pos, reference = self.sampling_positions(q_map)
        keys = self.sample_keys(x, pos).transpose(1, 2)  # (B, Ns, C) view
        kv_weight = torch.cat((_matrix(self.proj_k), _matrix(self.proj_v)))  # one matmul for k and v
        kv_bias = torch.cat((self.proj_k.bias, self.proj_v.bias))
        k, v = F.linear(keys, kv_weight, kv_bias).chunk(2, dim=-1)  # 2 × (B, Ns, C)

        bias = self.position_bias(H, W, pos)
        # (select queries) with query_ratio < 1 only the k most salient queries attend
        scorer = getattr(self, "query_scorer", None)  # modules pickled before the option have none
        chosen = scorer(x) if scorer is not None else None
        if chosen is not None:
            q = chosen.gather(q)  # (B, k, C)
            bias = None if bias is None else chosen.gather_rows(bias)

        c = self.n_head_channels
        heads = lambda t: t.reshape(B, -1, n, c).transpose(1, 2)  # (B, L, C) -> (B, heads, L, c) view
        out, attn = self.attend(heads(q), heads(k), heads(v), bias)
        out = out.transpose(1, 2).flatten(2)  # (B, M, C) tokens, M = HW or k
        if chosen is not None:
            out = chosen.scatter(out, like=q_map.flatten(2).transpose(1, 2))  # (B, HW, C), 0 where not selected
        if self.record:
            self.recorded = {"pos": pos.detach().reshape(B, self.n_groups, *pos.shape[1:]),
                             "reference": reference.detach().reshape(B, self.n_groups, *pos.shape[1:]),
                             "attn": (attn if chosen is None else chosen.scatter_rows(attn, H * W)).detach()}
            if chosen is not None:
                self.recorded["selected"] = chosen.index.detach()
        out = out.transpose(1, 2)  # (B, C, HW) view of the tokens
        if self.pe_kind == "dwc":
            out = self.rpe_table(q_map).flatten(2) + out  # the conv's output first: the sum takes its layout
        # the output projection as W·out, which lands in NCHW directly: YOLOv5's next layers want an ordinary
        # NCHW map, and a transposing copy of the result (and of its gradient) is what this saves
        y = torch.baddbmm(self.proj_out.bias.view(1, C, 1).expand(B, C, H * W),
                          _matrix(self.proj_out).expand(B, C, C), out)  # (B, C, HW)
        return self.proj_drop(y.reshape(B, C, H, W))


KERNELS = ("ours", "sdpa", "explicit")


def select_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  dropout: float = 0.0, record: bool = False) -> str:
    """Which attention kernel `DAttention.attend` runs for these inputs: one of `KERNELS`.

    Args:
        q: (B, heads, M, c); k, v: (B, heads, N, c), as `attend` receives them; bias: (B, heads, M, N) or None;
        dropout: the attention dropout in effect (0 in eval); record: `DAttention.record`.
    Returns:
        - "explicit" (scores -> softmax -> weights) when the weights are wanted (`record`) or a gradient must reach
          the bias (the fused kernels cannot return it);
        - "ours" (`cpu_attention`) with no bias and no dropout where `cpu_attention.supports` the tokens: CPU fp32,
          a head width in `cpu_attention.HEAD_DIMS` (every width the shipped models have, 4 to 80 channels),
          kernel built, no graph being captured;
        - "sdpa" (`F.scaled_dot_product_attention`, the bias as an additive mask) otherwise.
    The process-wide switch (`kernel_switch.set_attention_kernel`) narrows this: "explicit" always gives
    "explicit", "sdpa" never gives "ours". Which internal kernel SDPA dispatches to is PyTorch's choice and
    differs between releases; this is ours.
    """
    switch = attention_kernel()
    if switch == "explicit" or record or (bias is not None and bias.requires_grad and torch.is_grad_enabled()):
        return "explicit"
    if (switch in ("auto", "ours") and bias is None and dropout == 0.0 and cpu_attention is not None
            and cpu_attention.supports(_tokens(q), _tokens(k), _tokens(v), q.shape[1])):
        return "ours"
    return "sdpa"


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, c) -> (B, L, heads·c): the token layout the projections were computed in (a view there)."""
    return t.transpose(1, 2).flatten(2)


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """The (C_out, C_in) matrix of a 1×1 convolution's weight (a view, so gradients reach the conv)."""
    return conv.weight.flatten(1)
