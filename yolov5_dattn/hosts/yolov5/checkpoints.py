"""Safe checkpoint loading: `torch.load(weights_only=True)` with an explicit allowlist.

A YOLOv5 checkpoint pickles whole modules, so `weights_only=True` needs the classes it names. We allow
exactly: our modules, YOLOv5's model classes, torch.nn's modules, numpy's array reconstructors and a few
plain value types YOLOv5 stores (paths). Anything else — including `builtins.getattr`, which a stock
7.0.14 segmentation checkpoint contains — is refused with one line unless the user trusts the file
(`--trust-checkpoint`, or YOLOV5_DATTN_TRUST_CHECKPOINT=1 which the scripts set for their workers).
A pickle that would run code therefore never runs it by default.

Allowlisting a class for torch's weights-only unpickler lets a pickle do two things with it: NEWOBJ
(`cls.__new__(cls)`, then BUILD fills `__dict__` via `__setstate__`: no constructor runs; this is how
torch.save pickles every nn.Module, through `copyreg.__newobj__`) and REDUCE (`cls(*args)`, with
arguments the file chooses). REDUCE on a model class is code execution: `DetectionModel(cfg)` builds
the model from `cfg`. So the unpickler never sees our nn.Module classes themselves: under each class's
name it gets a stand-in (`_RestoreOnly`) whose `__new__` makes a real, uninitialised instance and whose
call is refused; the real classes are allowlisted only under names no pickle can spell (they contain a
newline), so BUILD accepts their instances. Every other allowlisted global is torch's own tensor
rebuilders and containers, numpy's array/dtype reconstructors and pathlib's path classes: calling those
builds data and runs nothing.

A checkpoint's `model.yaml` is data the file chooses too, and training (also --resume) rebuilds the
model from it, so `load` also resolves the model dicts of 'model'/'ema' with `safe_yaml.check_model_dict`
(the same eval-free rules as the hooked parse_model), and refuses the file at once if one would not build.
"""
import contextlib
import pathlib
import pickle
from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

import torch
from torch import nn

from yolov5_dattn.core import weights_only
from yolov5_dattn.core.checkpoint_allowlist import module_classes, our_classes
from yolov5_dattn.hosts.public_names import spellings
from yolov5_dattn.errors import UserError, torch_load_reason
from yolov5_dattn.core.trust import TRUST_ENV, TRUST_FLAG, trusted  # noqa: F401  (this module's API too)
from .safe_yaml import UnsafeModelYAML, check_model_dict

__all__ = ["CALL_REFUSED", "TRUST_ENV", "TRUST_FLAG", "allow_host_modules", "allow_model_modules", "allowlist",
           "check_model_checkpoint", "is_legacy_format", "load", "only_our_allowlist", "safe_globals", "trusted",
           "without_process_allowlist"]

_allowlist: Optional[List[Any]] = None
_safe_globals: Optional[List[Any]] = None
_host_model_modules: List[Any] = []  # a git clone's models.common/experimental/yolo (`allow_model_modules`)
CALL_REFUSED = "yolov5_dattn refused a call of"  # in the UnpicklingError a stand-in raises


def _torch_nn_classes() -> List[type]:
    """Every public nn.Module class of torch.nn (Conv2d, BatchNorm2d, SiLU, Upsample, ...)."""
    return [obj for name, obj in vars(nn).items()
            if isinstance(obj, type) and issubclass(obj, nn.Module) and not name.startswith("_")]


def _numpy_reconstructors() -> List[Any]:
    """What a pickled numpy array/scalar names: the reconstructor, ndarray, dtype and its classes."""
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [obj for obj in vars(np.dtypes).values() if isinstance(obj, type)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def allowlist() -> List[Any]:
    """The globals a checkpoint may name (built once). Shapes: n/a."""
    global _allowlist
    if _allowlist is None:
        from yolov5.models import common, experimental, yolo

        from . import blocks
        classes = our_classes(blocks)
        for module in (common, experimental, yolo, *_host_model_modules):
            classes += module_classes(module)
        _allowlist = [*classes, *_torch_nn_classes(), *_numpy_reconstructors(),
                      pathlib.PurePosixPath, pathlib.PosixPath, pathlib.PureWindowsPath, pathlib.WindowsPath]
        _allowlist = list({id(o): o for o in _allowlist}.values())
    return _allowlist


def allow_model_modules(*modules) -> None:
    """Also allow the nn.Module classes defined in `modules` (a git clone's `models.common`, `models.yolo`,
    ...: its checkpoints name `models.yolo.DetectionModel`, not `yolov5.models.yolo.DetectionModel`)."""
    global _allowlist, _safe_globals
    new = [m for m in modules if m not in _host_model_modules]
    if new:
        _host_model_modules.extend(new)
        _allowlist = _safe_globals = None


def allow_host_modules(host) -> None:
    """`allow_model_modules` for the model modules of `host` (a `compat.Host`: a git clone's)."""
    allow_model_modules(host.module("models.common"), host.module("models.experimental"), host.module("models.yolo"))


def _name(g: Any) -> str:
    return f"{g.__module__}.{g.__qualname__}"


class _RestoreOnly:
    """What the unpickler gets for an allowlisted nn.Module class: NEWOBJ (`x.__new__(x, *args)`) makes
    an uninitialised instance of the real class; REDUCE (`x(*args)`) is refused."""

    def __init__(self, cls: type):
        self.cls = cls
        # an instance attribute wins over object.__new__ in the unpickler's `cls.__new__` lookup
        self.__new__ = lambda _stand_in, *args: cls.__new__(cls, *args)

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"{CALL_REFUSED} {_name(self.cls)}(...)")

    def __repr__(self) -> str:
        return f"<restore-only {_name(self.cls)}>"


def safe_globals() -> List[Any]:
    """What `load` hands `torch.serialization.safe_globals` (built once): nn.Module classes as
    (stand-in, their name) plus (class, an unspellable name) for BUILD; everything else as it is."""
    global _safe_globals
    if _safe_globals is None:
        entries = []
        for g in allowlist():
            if isinstance(g, type) and issubclass(g, nn.Module):
                for name in spellings(g):
                    entries += [(_RestoreOnly(g), name), (g, f"{name}\n(build only)")]
            else:
                entries.append(g)
        _safe_globals = entries
    return _safe_globals


def _refused_globals(f: Union[str, Path]) -> List[str]:
    """The globals `f` names that are not on the allowlist, e.g. ['builtins.getattr'] (read, not run)."""
    allowed = {name for g in allowlist() for name in (spellings(g) if isinstance(g, type) else [_name(g)])}
    try:
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(f)) if g not in allowed]
    except Exception:  # not a zip checkpoint (old format or corrupt): torch cannot list them
        return []



# what torch.save(..., _use_new_zipfile_serialization=False) writes first: a pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_legacy_format(f: Any) -> bool:
    """True for a file in PyTorch's pre-1.6 (non-zip) checkpoint format."""
    if not isinstance(f, (str, Path)):
        return False
    with open(f, "rb") as fh:
        return fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


@contextlib.contextmanager
def without_process_allowlist() -> Iterator[None]:
    """While the block runs, this thread's weights-only allowlist is empty (torch's own tensor rebuilders aside):
    classes other code added to torch's process-wide list for good are not seen. The process-wide list itself is
    not touched, so loads in other threads are unaffected (`yolov5_dattn.core.weights_only.scope`)."""
    with weights_only.scope():
        yield


@contextlib.contextmanager
def only_our_allowlist() -> Iterator[None]:
    """While the block runs, this thread's weights-only allowlist is exactly `safe_globals()`: classes others added
    to the process-wide list would let a checkpoint call them, and ours must not leak into other threads' loads."""
    with weights_only.scope(safe_globals()):
        yield


def load(f: Union[str, Path], map_location: Any = None, trust: Optional[bool] = None, **kwargs) -> Any:
    """Load a checkpoint with `weights_only=True` and the allowlist; drop-in for YOLOv5's `torch.load`.

    Args:
        f: checkpoint path (file-like objects are passed through).
        map_location: as `torch.load`.
        trust: load with full pickle if the allowlist refuses; default: `trusted()`.
    Returns: the unpickled object (a YOLOv5 checkpoint is a dict with 'model'/'ema' modules).
    Raises: UserError naming the file — missing, not a checkpoint (corrupt/truncated), needs a global
        outside the allowlist or calls an allowlisted model class (and not trusted), or its model's `.yaml`
        holds a string only `eval` could read (always: nothing in a model dict is ever evaluated).
    """
    kwargs.pop("weights_only", None)
    trust = trusted() if trust is None else trust
    name = str(f)
    if isinstance(f, (str, Path)) and not Path(f).is_file():
        raise UserError(f"checkpoint {name} not found: check the --weights/--resume path")
    if is_legacy_format(f):  # torch's weights-only unpickler reads zip checkpoints only
        if not trust:
            raise UserError(f"checkpoint {name} is in PyTorch's old non-zip format (torch.save with "
                            f"_use_new_zipfile_serialization=False), which cannot be loaded safely: pass "
                            f"{TRUST_FLAG} only if you trust where it came from, or re-save it with a current "
                            f"torch.save") from None
        return _load_trusted(f, name, map_location, **kwargs)
    try:
        with only_our_allowlist():
            return _yaml_checked(torch.load(f, map_location=map_location, weights_only=True, **kwargs), name)
    except UserError:
        raise
    except pickle.UnpicklingError as e:
        if CALL_REFUSED in str(e):
            called = str(e).split(CALL_REFUSED, 1)[1].split()[0]
            if not trust:
                raise UserError(f"checkpoint {name} calls {called} while loading (a saved model is restored, "
                                f"never called: a call runs code the file chooses), so it was not loaded: pass "
                                f"{TRUST_FLAG} only if you trust where it came from") from None
            return _load_trusted(f, name, map_location, **kwargs)
        refused = _refused_globals(f)
        if not refused and "Unsupported global" not in str(e):
            raise UserError(f"checkpoint {name} is corrupt or not a PyTorch checkpoint ({torch_load_reason(e)}): "
                            f"re-save or re-train it") from None
        if not trust:
            what = ", ".join(refused) or torch_load_reason(e)
            raise UserError(f"checkpoint {name} needs {what}, which is not on the safe allowlist, so it was "
                            f"not loaded: pass {TRUST_FLAG} only if you trust where it came from") from None
    except Exception as e:  # a junk or truncated file fails anywhere in torch's reader (IndexError, struct.error...)
        raise UserError(f"checkpoint {name} is corrupt or not a PyTorch checkpoint ({torch_load_reason(e)}): "
                        f"re-save or re-train it") from None
    # the user vouched for this file: full pickle, code in it may run
    return _load_trusted(f, name, map_location, **kwargs)


def _load_trusted(f: Any, name: str, map_location: Any, **kwargs) -> Any:
    """Full pickle; a model the pickle builds still goes through the eval-free parse_model."""
    try:
        ckpt = torch.load(f, map_location=map_location, weights_only=False, **kwargs)
    except UnsafeModelYAML as e:
        raise UserError(f"checkpoint {name}: {e}") from None
    except Exception as e:
        raise UserError(f"checkpoint {name} is corrupt or not a PyTorch checkpoint ({torch_load_reason(e)}): "
                        f"re-save or re-train it") from None
    return _yaml_checked(ckpt, name)


def _yaml_checked(ckpt: Any, name: str) -> Any:
    """`ckpt`, after resolving the model dict (`.yaml`) of its 'model'/'ema' as parse_model will: training
    and --resume rebuild the model from `ckpt['model'].yaml`, so a string there that only `eval` could
    read is refused now (UnsafeModelYAML naming the file), not halfway through a run."""
    if isinstance(ckpt, dict):
        for key in ("model", "ema"):
            saved = ckpt.get(key)
            if isinstance(saved, nn.Module) and isinstance(vars(saved).get("yaml"), dict):
                check_model_dict(saved.yaml, source=f"checkpoint {name}: {key}.yaml")
    return ckpt


def check_model_checkpoint(f: Union[str, Path], trust: Optional[bool] = None) -> nn.Module:
    """Return the model of checkpoint `f` ('ema' else 'model'); UserError unless it loads safely and holds
    a YOLOv5 model.

    Used before any work starts, so a foreign file (a bare state_dict, another project's pickle) is one
    line, not a KeyError deep inside YOLOv5.
    """
    ckpt = load(f, map_location="cpu", trust=trust)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module) or not hasattr(model, "stride"):
        kind = f"a dict with keys {sorted(map(str, ckpt))[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"checkpoint {f} is not a YOLOv5 checkpoint (found {kind}, expected 'model'/'ema'): "
                        f"pass a .pt written by scripts/train.py")
    return model
