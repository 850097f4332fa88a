"""ultralytics' AMP check without its download: the model being trained, compared with itself.

ultralytics' `check_amp` decides whether a CUDA training run uses mixed precision by running `yolo26n.pt` on
`bus.jpg` in fp32 and under autocast and comparing the boxes; it downloads those weights first. Offline (our
commands' policy) that reference cannot be had, and answering False would train without AMP, silently. So where
the reference weights are not on disk, the same comparison runs on a copy of the model being trained: its raw
head outputs on `bus.jpg`, in fp32 and under autocast, must be finite and agree within ultralytics' tolerance
(0.5, absolute). Everything else is ultralytics' own decision: no AMP on CPU or MPS, and its list of GPUs with
known AMP problems (the original check answers those before it would download anything).
"""
import copy
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import nn

__all__ = ["TOLERANCE", "amp_outputs_agree", "check_amp_offline"]

TOLERANCE = 0.5  # ultralytics' `torch.allclose(a, b, atol=0.5)` on the boxes and scores of its check


def _tensors(out) -> List[torch.Tensor]:
    """Every floating-point tensor in a head's output (a tensor, or nested tuples / lists / dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _image(model: nn.Module, device: torch.device) -> torch.Tensor:
    """ultralytics' `bus.jpg` as a (1, 3, S, S) float tensor in [0, 1], S = max(256, 4 × the model's max stride)."""
    import numpy as np
    from PIL import Image
    from ultralytics.utils import ASSETS

    stride = int(getattr(model, "stride", torch.tensor([32.0])).max())
    side = max(256, stride * 4)
    image = Image.open(Path(ASSETS) / "bus.jpg").convert("RGB").resize((side, side))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float().div(255).to(device)


def amp_outputs_agree(model: nn.Module, device_type: Optional[str] = None,
                      dtype: Optional[torch.dtype] = None) -> bool:
    """True when a copy of `model` in eval mode gives finite outputs under autocast that agree with its fp32
    outputs within `TOLERANCE` on `bus.jpg`.

    Args:
        model: a detection model (input (B, 3, H, W) in [0, 1]); its parameters' device is used.
        device_type: autocast's device type (default: the model's); dtype: autocast's dtype (default: its default
            for that device: fp16 on CUDA, bf16 on CPU).
    """
    device = next(model.parameters()).device
    probe = copy.deepcopy(model).float().eval()
    image = _image(probe, device)
    with torch.no_grad():
        reference = _tensors(probe(image))
        with torch.autocast(device_type or device.type, dtype=dtype):
            mixed = _tensors(probe(image))
    del probe
    return bool(reference) and len(reference) == len(mixed) and all(
        a.shape == b.shape and torch.isfinite(b).all() and torch.allclose(a, b.float(), atol=TOLERANCE)
        for a, b in zip(reference, mixed))


def check_amp_offline(original: Callable[[nn.Module], bool]) -> Callable[[nn.Module], bool]:
    """ultralytics' `check_amp` (`original`) that never downloads: it runs as is where its reference weights are
    on disk, and where its own rules decide without them (CPU, MPS, a GPU on its list); otherwise the model being
    trained is compared with itself (`amp_outputs_agree`)."""

    def check_amp(model: nn.Module) -> bool:
        """AMP on (True) or off (False) for training `model`, as ultralytics decides, without a download."""
        from ultralytics.utils import LOGGER, WEIGHTS_DIR
        device = next(model.parameters()).device
        if device.type != "cuda" or (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
            return original(model)
        name = torch.cuda.get_device_name(device)
        if _on_ultralytics_list(name):
            return original(model)  # answered from the GPU's name, before any download
        if amp_outputs_agree(model):
            LOGGER.info("AMP: checks passed on the model being trained (no reference weights on disk)")
            return True
        LOGGER.warning("AMP: fp32 and mixed-precision outputs of the model being trained disagree; training "
                       "without AMP (pass amp=False to silence this check)")
        return False

    return check_amp


def _on_ultralytics_list(gpu_name: str) -> bool:
    """True for a GPU ultralytics' check refuses AMP on by name (its pattern, ultralytics 8.4)."""
    import re
    return bool(re.search(r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
                          gpu_name, re.IGNORECASE))
