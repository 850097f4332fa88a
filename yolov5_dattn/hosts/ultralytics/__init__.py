"""The ultralytics host: DAttention blocks for YOLOv8, YOLO11, YOLO26 and RT-DETR, without editing ultralytics.

`import yolov5_dattn.hosts.ultralytics` installs the plugin steps, once (importing it again, or `install()`, is a no-op);
they act only on models that hold our blocks. `use_policy()` adds our commands' policy (`yolov5-dattn ...` and
`scripts/*` call it; a library user opts in with that one call); the plain import never changes ultralytics'
settings, environment, network access, loaders or AMP decision.

What each step changes, where in ultralytics and why: `changes.STEPS` (`yolov5-dattn changes --host ultralytics
--steps`). Plugin steps: registry, flops, transfer report, fmap checks, ddp workers, edge exports. Policy steps: offline,
safe loading, resume beside the checkpoint, atomic saves, input checks, label caches.

Every change is made through `yolov5_dattn.patching` (`patching.changes("ultralytics")` lists them).
Tested with ultralytics `registry.TESTED_RANGE`; another parse_model shape is refused in one line.
"""
import warnings

from yolov5_dattn.core import command_policy

from .blocks import (AIFI_DAttention, Bottleneck_DAttention, C2f_DAttention, C2PSA_DAttention,  # noqa: E402
                     C3k2_DAttention, C3k_DAttention)
from .registry import (REGISTRY, TESTED_RANGE, UnsupportedUltralytics, in_tested_range,  # noqa: E402
                       register_module, ultralytics_version)
from yolov5_dattn.core.trust import trust_checkpoints  # noqa: E402  (full-pickle loads for files the user vouches for)

__all__ = ["AIFI_DAttention", "Bottleneck_DAttention", "C2f_DAttention", "C2PSA_DAttention", "C3k2_DAttention",
           "C3k_DAttention", "REGISTRY", "UnsupportedUltralytics", "TESTED_RANGE", "install", "register_module", "policy_applied",
           "trust_checkpoints", "use_policy"]

_installed = False
_policy = False


def install() -> None:
    """Install the ultralytics integration (idempotent). Raises UnsupportedUltralytics for a parse_model of
    another shape, before changing anything."""
    global _installed
    if _installed:
        return
    from yolov5_dattn import patching
    from . import ddp, edge_export, flops, fmap_checks, registry, scale_from_name, transfer
    version = ultralytics_version()
    if not in_tested_range(version):
        warnings.warn(f"yolov5_dattn: ultralytics {version} is outside the tested range "
                      f">={TESTED_RANGE[0]},<{TESTED_RANGE[1]}", stacklevel=2)
    with patching.applying("registry"):
        registry.register()
        scale_from_name.apply()
    flops.apply()
    transfer.apply()
    fmap_checks.apply()
    ddp.apply()
    edge_export.apply()
    _installed = True


def use_policy() -> None:
    """Our commands' policy for ultralytics (idempotent): offline, safe loading, checks before any work.

    `yolov5-dattn yolo ...` and `scripts/*` call it; a library user opts in with one call."""
    global _policy
    if _policy:
        return
    install()
    from yolov5_dattn.core.offline_env import set_offline_environment
    from . import atomic_saves, checkpoints, data_download, input_checks, label_caches, offline, resume
    set_offline_environment()
    offline.apply()
    checkpoints.apply()
    data_download.apply()
    resume.apply()
    atomic_saves.apply()
    input_checks.apply()  # after the loaders' steps: its checks wrap theirs, so they run first
    label_caches.apply()  # wraps nothing input_checks checks
    _policy = True


def policy_applied() -> bool:
    """Whether `use_policy()` has run in this process."""
    return _policy


install()
if command_policy.requested():  # one of our commands imported this adapter (yolov5_dattn.cli.policy)
    use_policy()
