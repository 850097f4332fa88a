"""The ultralytics host: DAttention blocks for YOLOv8, YOLO11, YOLO26 and RT-DETR, without editing ultralytics.

`import yolov5_dattn.ultralytics` installs everything, once (importing it again, or `install()`, is a no-op):

1. `offline`: ultralytics never reaches the network (no font / weight / AMP-check download, no pip install);
2. `registry`: `ultralytics.nn.tasks.parse_model` builds `C2f_DAttention`, `C3k2_DAttention`, `C3k_DAttention`,
   `C2PSA_DAttention`, `AIFI_DAttention`, `Bottleneck_DAttention` (and `DAttention`) like their parents;
   a model YAML whose name carries the scale (`yolo11n-...yaml`) builds from any folder (`scale_from_name`);
3. `flops`: ultralytics' model summary counts GFLOPs with the attention, never 0.0 from the thop clash;
4. `checkpoints`: checkpoints load with `weights_only=True` and an allowlist (ours included), by default;
5. `transfer`: a load of stock weights into a DAttention model (`pretrained=`, `.load()`) logs what was transferred;
6. `fmap_checks`: train / val / predict check each DAttention's feature maps at the run's imgsz first (fixed_pe).
7. `ddp`: multi-GPU workers (`device=0,1`) rebuild the trainer with our blocks, and with the launching process's
   policy when it had it.

Every change is made through `yolov5_dattn.patching` (`patching.changes("ultralytics")` lists them).
Tested with ultralytics `registry.TESTED_RANGE`; another parse_model shape is refused in one line.
"""
import warnings

from . import offline

offline.set_environment()  # before ultralytics' first import: it probes the network at import unless told not to

from .blocks import (AIFI_DAttention, Bottleneck_DAttention, C2f_DAttention, C2PSA_DAttention,  # noqa: E402
                     C3k2_DAttention, C3k_DAttention)
from .registry import TESTED_RANGE, UnsupportedUltralytics, in_tested_range, ultralytics_version  # noqa: E402

__all__ = ["AIFI_DAttention", "Bottleneck_DAttention", "C2f_DAttention", "C2PSA_DAttention", "C3k2_DAttention",
           "C3k_DAttention", "UnsupportedUltralytics", "TESTED_RANGE", "install", "policy_applied", "use_policy"]

_installed = False
_policy = False


def install() -> None:
    """Install the ultralytics integration (idempotent). Raises UnsupportedUltralytics for a parse_model of
    another shape, before changing anything."""
    global _installed
    if _installed:
        return
    from yolov5_dattn import patching
    from . import ddp, flops, registry, scale_from_name, transfer
    version = ultralytics_version()
    if not in_tested_range(version):
        warnings.warn(f"yolov5_dattn: ultralytics {version} is outside the tested range "
                      f">={TESTED_RANGE[0]},<{TESTED_RANGE[1]}", stacklevel=2)
    with patching.applying("registry"):
        registry.register()
        scale_from_name.apply()
    flops.apply()
    transfer.apply()
    ddp.apply()
    _installed = True
    use_policy()  # TODO(lead, issue 26): our commands call this; the import alone will not


def use_policy() -> None:
    """Our commands' policy for ultralytics (idempotent): offline, safe loading, checks before any work.

    `yolov5-dattn yolo ...` and `scripts/*` call it; a library user opts in with one call."""
    global _policy
    if _policy:
        return
    install()
    from . import checkpoints, fmap_checks
    offline.apply()
    checkpoints.apply()
    fmap_checks.apply()
    _policy = True


def policy_applied() -> bool:
    """Whether `use_policy()` has run in this process."""
    return _policy


install()
