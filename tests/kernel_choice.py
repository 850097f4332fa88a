"""Which attention kernel DAttention chose: a spy on `yolov5_dattn.nn.dattention.select_kernel`.

Tests assert on our own decision, never on the aten op that PyTorch's SDPA dispatches to (that op differs
between torch releases)."""
import contextlib
from typing import Iterator, List

from yolov5_dattn.nn import dattention


@contextlib.contextmanager
def chosen_kernels() -> Iterator[List[str]]:
    """Collects, in call order, what every `DAttention.attend` inside the block ran ('ours', 'sdpa', 'explicit')."""
    chosen: List[str] = []
    original = dattention.select_kernel

    def spy(*args, **kwargs):
        kernel = original(*args, **kwargs)
        chosen.append(kernel)
        return kernel

    dattention.select_kernel = spy
    try:
        yield chosen
    finally:
        dattention.select_kernel = original
