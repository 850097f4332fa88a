"""No checkpoint ultralytics reads runs code: every load is weights-only with an allowlist, unless trusted.

ultralytics reads `.pt` files in many places, and each decides how:

- `nn.tasks.torch_safe_load` (`model=`, `pretrained=`, `resume`, val / predict / export): full pickle unless its
  `SAFE_LOAD`; with it, `_SafeLoad.loading` (weights-only, an allowlist of torch's and ultralytics' classes), which
  adds those classes to torch's process-wide allowlist for good;
- `utils.patches.torch_load`, a `torch.load` that unpickles in full, imported by name into `nn.tasks`,
  `utils.torch_utils` (`strip_optimizer`, run on last.pt / best.pt after every training), the trainer, the SAM,
  SAM 3 and YOLO-NAS builders, YOLO-World / YOLOE's text-embedding caches and the multi-GPU worker script.

`apply()` (policy step `safe loading`) makes one rule hold at all of them:

1. every load is `torch.load(weights_only=True)` with ultralytics' allowlist plus ours (the blocks, DAttention and
   its parts), held in a scope of the loading thread (`yolov5_dattn.core.weights_only`): torch's process-wide
   allowlist is exactly what it was after any load, and no other thread's load sees these classes;
2. a file the allowlist refuses is refused before anything in it runs (`CheckpointRefused`: one line naming the
   file and `--trust-checkpoint`); only a user who trusts it (`yolov5_dattn.core.trust`: the flag, or
   `trust_checkpoints()`) gets a full-pickle load;
3. YOLO-NAS (ultralytics picks it for a file name holding `yolo_nas`) is a whole pickled super-gradients model that
   only full pickle reads: refused without trust before the file is opened. SAM / SAM 2 / SAM 3 (`sam_` in the
   name) are state dicts of tensors, which load weights-only like any other checkpoint;
4. one full-pickle load needs no flag: ultralytics' own multi-GPU worker state (`is_ddp_state` says why).
"""
import contextlib
import contextvars
import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from yolov5_dattn import patching
from yolov5_dattn.core import weights_only
from yolov5_dattn.core.checkpoint_allowlist import our_classes
from yolov5_dattn.hosts.public_names import spellings
from yolov5_dattn.errors import UserError, torch_load_reason
from yolov5_dattn.core.trust import TRUST_FLAG, trust_checkpoints, trusted

__all__ = ["CheckpointRefused", "allowed_classes", "apply", "is_ddp_state", "refusal_in", "torch_load",
           "trust_checkpoints", "STEP"]

STEP = "safe loading"
WHY_DEFAULT = "ultralytics unpickles checkpoints in full (arbitrary code) unless restricted loading is on"
WHY_LOAD = ("ultralytics' torch_load unpickles in full (arbitrary code): strip_optimizer, resume, the SAM/NAS "
            "builders and text caches call it on files a user may have been given")
WHY_SCOPE = ("ultralytics' restricted loader adds its classes to torch's process-wide allowlist for good: they "
             "must hold for that load only, and include ours")
WHY_NAS = "a YOLO-NAS .pt is a whole pickled model that only a full-pickle load reads (arbitrary code)"
WHY_DDP = "the multi-GPU worker state is trusted only in a folder and file no one else can write, whatever the umask"

_in_loading: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_ultralytics_loading", default=False)


class CheckpointRefused(UserError):
    """A checkpoint that a weights-only load refuses (it needs full pickle, which can run code), or a YOLO-NAS
    model, without `--trust-checkpoint`."""


def allowed_classes() -> Dict[str, type]:
    """'module.QualName' -> class, for every class of ours a checkpoint may hold."""
    from . import blocks
    return {name: c for c in our_classes(blocks) for name in spellings(c)}


_entries: Optional[list] = None


def _our_entries() -> list:
    """`allowed_classes()` as torch's allowlist entries (built once)."""
    global _entries
    if _entries is None:
        _entries = [(cls, name) for name, cls in allowed_classes().items()]
    return _entries


# ---- the multi-GPU worker state ---------------------------------------------------------------------------------
def _own_and_private(st: os.stat_result) -> bool:
    """Owned by this process's user and writable by no one else (no group or other write bit)."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _ddp_state_stat(path: Any) -> Optional[os.stat_result]:
    """The lstat of `path` when `is_ddp_state(path)`, else None."""
    from ultralytics.utils import dist
    p = Path(path)
    if not (p.name.startswith("_temp_") and p.suffix == ".pt"):  # generate_ddp_file's names
        return None
    try:
        folder, parent, st = os.lstat(Path(dist.USER_CONFIG_DIR) / "DDP"), os.stat(p.parent), os.lstat(p)
    except OSError:
        return None
    if not (stat.S_ISDIR(folder.st_mode) and os.path.samestat(folder, parent) and stat.S_ISREG(st.st_mode)):
        return None  # elsewhere, a symlinked folder, or a link / device instead of a file
    return st if _own_and_private(folder) and _own_and_private(st) else None


def is_ddp_state(path: Any) -> bool:
    """True for a multi-GPU worker state that ultralytics' `generate_ddp_file` wrote for this user, which the
    worker may (and must: cloudpickle'd callbacks and classes) load with full pickle.

    Why that file is trusted: it lies directly in ultralytics' DDP folder (`USER_CONFIG_DIR/DDP`, not reached
    through a symlink), named `_temp_*.pt` as `generate_ddp_file` names it, and both that folder and the file
    are owned by the current user and writable by no one else (no group or other write bit; neither is a
    symlink). Then only this user (or root) can have written or replaced it: it is the state the user's own
    training wrote a moment before, not a file anyone gave them. Under the policy `generate_ddp_file` makes the
    folder 0700 and the file 0600, so this holds whatever the umask. The same file anywhere else, or in a folder
    others can write to, is loaded weights-only like any other `.pt` (and refused)."""
    return _ddp_state_stat(path) is not None


def _open_ddp_state(path: Any):
    """`path` opened for reading when it is the trusted DDP state, else None; the bytes read are those of the
    file checked (opened without following a link, then compared by inode)."""
    st = _ddp_state_stat(path)
    if st is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    if not os.path.samestat(os.fstat(fd), st):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _private_ddp_files(original: Callable) -> Callable:
    def generate_ddp_file(trainer):
        """ultralytics' generate_ddp_file, with its folder made 0700 first and the state file 0600 after, so that
        `is_ddp_state` holds for it whatever the umask."""
        from ultralytics.utils import dist
        folder = Path(dist.USER_CONFIG_DIR) / "DDP"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            os.chmod(folder, 0o700)
        script = original(trainer)
        state = Path(script).with_suffix(".pt")
        if state.is_file():
            os.chmod(state, 0o600)
        return script
    return generate_ddp_file


# ---- loading ----------------------------------------------------------------------------------------------------
def _refused(e: BaseException, f: Any) -> bool:
    """True when torch's weights-only reader refused `f` (a global, a call, or a pickle opcode outside its subset,
    as cloudpickle writes) rather than `f` being damaged or no checkpoint at all."""
    text = str(e)
    if "Unsupported operand" in text:  # a real pickle needing the full unpickler, or bytes that are no pickle
        return _is_zip(f)
    return text.startswith("Weights only load failed")


def _is_zip(f: Any) -> bool:
    """True when `f` (a path or a seekable binary file) is a zip archive, as every current torch.save writes."""
    if isinstance(f, (str, os.PathLike)):
        return zipfile.is_zipfile(f)
    start = f.tell()
    try:
        return zipfile.is_zipfile(f)
    finally:
        f.seek(start)



def _name(f: Any) -> str:
    return str(f) if isinstance(f, (str, os.PathLike)) else str(getattr(f, "name", type(f).__name__))


def refusal_in(e: BaseException) -> BaseException:
    """The `CheckpointRefused` behind `e` (ultralytics re-raises some load errors as its own: a refused `resume`
    checkpoint becomes 'Resume checkpoint not found'), else `e`."""
    first, seen = e, set()
    while e is not None and id(e) not in seen:
        if isinstance(e, CheckpointRefused):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return first


def torch_load(f: Any, *args, **kwargs) -> Any:
    """ultralytics' `utils.patches.torch_load` under our policy: `torch.load(f, weights_only=True)` with
    ultralytics' allowlist and ours, in a scope of this thread; full pickle only for a trusted user or for the
    multi-GPU worker state (`is_ddp_state`). Any `weights_only` argument is ignored.

    Args: as `torch.load` (`f` a path or a binary file object, as SAM's builders pass).
    Returns: what the file holds.
    Raises: CheckpointRefused (one line naming the file and `--trust-checkpoint`) when the allowlist refuses it
        and the user does not trust it; torch's own error for a damaged file.
    """
    kwargs.pop("weights_only", None)
    if isinstance(f, (str, os.PathLike)):
        state = _open_ddp_state(f)
        if state is not None:
            with state:
                return _full_load(state, *args, **kwargs)
    start = f.tell() if hasattr(f, "tell") else None
    import torch
    try:
        if _in_loading.get():  # inside `_SafeLoad.loading`: its scope holds the allowlist
            return torch.load(f, *args, weights_only=True, **kwargs)
        import ultralytics.nn.tasks as tasks
        with tasks._SafeLoad.loading(f):
            return torch.load(f, *args, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        if not _refused(e, f):
            raise
        if not trusted():
            raise CheckpointRefused(
                f"checkpoint {_name(f)} was not loaded: {torch_load_reason(e).rstrip('.')} (only torch's, "
                f"ultralytics' and yolov5_dattn's model classes load safely; a full pickle can run code): "
                f"pass {TRUST_FLAG} only if you trust where it came from") from None
    if start is not None:
        f.seek(start)
    return _full_load(f, *args, **kwargs)


def _full_load(f: Any, *args, **kwargs) -> Any:
    """`torch.load(weights_only=False)`: for a file the user trusts, or the DDP worker state."""
    import torch
    return torch.load(f, *args, weights_only=False, **kwargs)


def _scoped_loading(original: Callable) -> classmethod:
    @contextlib.contextmanager
    def loading(cls, weight):
        """ultralytics' `_SafeLoad.loading` inside a scope of this thread that starts with our classes: what it
        registers with `add_safe_globals` holds for this load only, never for the process."""
        start = weight.tell() if hasattr(weight, "tell") else None
        with weights_only.scope(_our_entries()), original(cls, weight):
            if start is not None:  # its scan of the file's globals read a file object: rewind for the load
                weight.seek(start)
            token = _in_loading.set(True)
            try:
                yield
            finally:
                _in_loading.reset(token)
    return classmethod(loading)


def _refuse_nas(original: Callable) -> Callable:
    def _load(self, weights: str, task=None):
        """ultralytics' NAS._load, for a user who trusts the file; refused otherwise, before it is opened."""
        if not trusted():
            raise CheckpointRefused(
                f"model={weights} is loaded as YOLO-NAS (ultralytics picks it by 'yolo_nas' in the name): its "
                f"weights are a whole pickled super-gradients model that only a full pickle reads, which can run "
                f"code: pass {TRUST_FLAG} only if you trust where it came from")
        return original(self, weights, task)
    return _load


def apply() -> None:
    """Install the rule above (idempotent). Changes nothing of torch's process-wide allowlist."""
    import ultralytics.nn.tasks as tasks
    from ultralytics.models.nas import model as nas
    from ultralytics.utils import dist, patches
    safe = tasks._SafeLoad
    if not safe.SUPPORTED:  # torch < 2.6: no restricted loading to build on
        raise UserError("ultralytics' safe checkpoint loading needs torch >= 2.6: upgrade torch")
    with patching.applying(STEP):
        patching.patch(tasks, "SAFE_LOAD", True, why=WHY_DEFAULT)
        patching.patch(safe, "loading", _scoped_loading(safe.__dict__["loading"].__func__), why=WHY_SCOPE)
        if not patching.is_patched(patches, "torch_load", WHY_LOAD):
            original = patches.torch_load
            patching.patch(patches, "torch_load", torch_load, why=WHY_LOAD,
                           also=patching.holders("torch_load", original))
        patching.patch(nas.NAS, "_load", _refuse_nas(nas.NAS.__dict__["_load"]), why=WHY_NAS)
        patching.patch(dist, "generate_ddp_file", _private_ddp_files(dist.generate_ddp_file), why=WHY_DDP)
