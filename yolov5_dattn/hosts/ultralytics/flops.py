"""GFLOPs in ultralytics' model summary that count the attention, and are never 0.0 from the thop clash.

ultralytics' `get_flops` calls `thop.profile(model, inputs=..., stride=..., min_cells=...)`, an API of
`ultralytics-thop`. `yolov5` pulls the old `thop` (same module name, no `stride`), so with both installed the
call raises TypeError, which get_flops swallows: every model summary says 0.0 GFLOPs. And neither thop sees
DAttention's matmuls. `get_flops` is replaced by our count (`analysis.flops.count_flops`: thop's convention
plus what thop misses, at the requested size, on a copy of the model); ultralytics' own code is kept as
the fallback for a model our counter cannot run.
"""
from yolov5_dattn import patching
from yolov5_dattn.core.summary_flops import summary_gflops

__all__ = ["WHY", "apply", "gflops"]

WHY = ("ultralytics' get_flops reports 0.0 with yolov5's old thop (no stride=) and misses the attention's "
       "matmuls")


def gflops(model, imgsz=640) -> float:
    """GFLOPs of one forward of ultralytics `model` on a (1, ch, h, w) image, attention included.

    Args: model (an ultralytics model, possibly wrapped by DDP/EMA); imgsz int or [h, w].
    Raises whatever the model's forward raises at that size."""
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(model)
    parameter = next(model.parameters())
    # on the model's own device, not `meta`: ultralytics' heads read tensor values (make_anchors' .item())
    return summary_gflops(model, imgsz, device=parameter.device, channels=parameter.shape[1]).gflops


def _get_flops(original):
    def get_flops(model, imgsz=640):
        """ultralytics' get_flops, counted by yolov5_dattn (attention included; never 0.0 from the thop clash)."""
        try:
            return gflops(model, imgsz)
        except Exception:
            return original(model, imgsz)
    return get_flops


def apply() -> None:
    """Replace ultralytics' get_flops (idempotent)."""
    import ultralytics.utils.torch_utils as torch_utils
    original = torch_utils.get_flops
    with patching.applying("flops"):
        patching.patch(torch_utils, "get_flops", _get_flops(original), also=patching.holders("get_flops", original, "ultralytics"), why=WHY)
