"""One switch for the attention kernel every DAttention runs, in the style of timm's `use_fused_attn`.

    set_attention_kernel("sdpa")          # at run time, for the whole process
    YOLOV5_DATTN_ATTENTION=explicit ...   # or from the environment, read once, here only

- "auto" (the default): `select_kernel` decides per call: our CPU kernel where it supports the tokens, else
  PyTorch's SDPA, and the explicit form where the weights or a bias gradient are needed;
- "ours": our CPU kernel wherever it supports the tokens (else SDPA: it cannot run on a GPU or in fp16);
- "sdpa": PyTorch's `scaled_dot_product_attention`, never ours;
- "explicit": scores -> softmax -> weights, always (the slowest; the one whose weights can be recorded).

A module whose weights are wanted (`DAttention.record`) runs the explicit form whatever the switch says.
Tests and benchmarks flip this switch (`attention_kernel_set_to`) rather than replace module attributes.
"""
import os
from typing import ContextManager

from .process_choice import ProcessChoice

__all__ = ["ENV", "CHOICES", "attention_kernel", "set_attention_kernel", "attention_kernel_set_to"]

ENV = "YOLOV5_DATTN_ATTENTION"
CHOICES = ("auto", "ours", "sdpa", "explicit")
_OFF_ENV = "YOLOV5_DATTN_CPU_KERNEL"  # `=0` turns our kernel off: the same as "sdpa"

_CHOICE = ProcessChoice(ENV, CHOICES, lambda: "sdpa" if os.environ.get(_OFF_ENV, "1") == "0" else "auto",
                        "set_attention_kernel")


def attention_kernel() -> str:
    """The kernel choice in force: one of `CHOICES` (the environment is read on the first call only)."""
    return _CHOICE.get()


def set_attention_kernel(name: str) -> None:
    """Choose the kernel for every DAttention in this process from now on. Raises ValueError for a name not in
    `CHOICES`."""
    _CHOICE.set(name)


def attention_kernel_set_to(name: str) -> ContextManager[None]:
    """`set_attention_kernel(name)` for the duration of the block; the previous choice is restored on exit."""
    return _CHOICE.set_to(name)
