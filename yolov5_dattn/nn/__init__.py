"""The math: DAT's deformable attention (offsets -> sample -> attend) in plain torch.

Nothing here imports a detection framework; `yolov5_dattn.hosts.yolov5` (and later other hosts) build their
blocks from these modules. `reference` is the straightforward einsum implementation the fast path is
tested and benchmarked against.
"""
from .dattention import DAttention, select_kernel
from .fmapsize import dattention_kwargs
from .kernel_switch import attention_kernel, attention_kernel_set_to, set_attention_kernel
from .layernorm import LayerNormProxy
from .sampler_switch import sampler, sampler_set_to, set_sampler

__all__ = ["DAttention", "LayerNormProxy", "attention_kernel", "attention_kernel_set_to", "dattention_kwargs",
           "sampler", "sampler_set_to", "select_kernel", "set_attention_kernel", "set_sampler"]
