"""The ultralytics host: DAttention blocks for YOLOv8, YOLO11, YOLO26 and RT-DETR, without editing ultralytics.

`import yolov5_dattn.ultralytics` installs the plugin steps, once (importing it again, or `install()`, is a no-op);
they act only on models that hold our blocks. `use_policy()` adds our commands' policy (`yolov5-dattn ...` and
`scripts/*` call it; a library user opts in with that one call); the plain import never changes ultralytics'
settings, environment, network access, loaders or AMP decision:

1. `registry` (plugin): `ultralytics.nn.tasks.parse_model` builds `C2f_DAttention`, `C3k2_DAttention`,
   `C3k_DAttention`, `C2PSA_DAttention`, `AIFI_DAttention`, `Bottleneck_DAttention` (and `DAttention`) like their parents;
   a model YAML whose name carries the scale (`yolo11n-...yaml`) builds from any folder (`scale_from_name`);
2. `flops` (plugin): ultralytics' model summary counts GFLOPs with the attention, never 0.0 from the thop clash;
3. `transfer report` (plugin): a load of stock weights into a DAttention model (`pretrained=`, `.load()`) logs what was
   transferred;
4. `fmap checks` (plugin): train / val / predict / export check each DAttention's feature maps at the run's imgsz
   first (fixed_pe); a model without DAttention passes through unchanged;
5. `ddp workers` (plugin): multi-GPU workers (`device=0,1`) rebuild the trainer with our blocks, and with the launching
   process's policy when it had it;
6. `offline` (policy): ultralytics never reaches the network (no font / weight download, no pip install); its AMP
   check compares the model being trained with itself instead of downloading reference weights (`amp_check`);
7. `safe loading` (policy): every checkpoint loads with `weights_only=True` and an allowlist (ours included), in a
   scope of the loading thread (torch's process-wide allowlist is left as it was); a file that needs full pickle
   loads only with `--trust-checkpoint` / `trust_checkpoints()` (`checkpoints`); a data YAML's `download:` is
   never run (`data_download`);
8. `resume beside the checkpoint` (policy): `resume` writes only into the run folder that holds the checkpoint;
9. `atomic saves` (policy): last.pt / best.pt, strip_optimizer, `Model.save` and ONNX / OpenVINO / TorchScript
   exports are written to a temp name and renamed when complete (a kill or a full disk loses nothing).
10. `input checks` (policy): train / val / predict / export and the model loaders refuse bad input (data, model,
   source, numbers, device, project) in one line before any run folder is made (`input_checks`).
11. `label caches` (policy): a dataset's `labels/*.cache` is read with restricted unpickling (numpy's arrays only);
   one that could run code is refused with one warning and rebuilt from the labels (`label_caches`).

Every change is made through `yolov5_dattn.patching` (`patching.changes("ultralytics")` lists them).
Tested with ultralytics `registry.TESTED_RANGE`; another parse_model shape is refused in one line.
"""
import warnings

from yolov5_dattn.core import command_policy

from .blocks import (AIFI_DAttention, Bottleneck_DAttention, C2f_DAttention, C2PSA_DAttention,  # noqa: E402
                     C3k2_DAttention, C3k_DAttention)
from .registry import (REGISTRY, TESTED_RANGE, UnsupportedUltralytics, in_tested_range,  # noqa: E402
                       register_module, ultralytics_version)
from yolov5_dattn.trust import trust_checkpoints  # noqa: E402  (full-pickle loads for files the user vouches for)

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
    from . import ddp, flops, fmap_checks, registry, scale_from_name, transfer
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
