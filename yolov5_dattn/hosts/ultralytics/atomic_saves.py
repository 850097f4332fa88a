"""ultralytics' checkpoints and exports are written atomically: a kill or a full disk never costs the previous file.

ultralytics writes in place, so a kill mid-save leaves a truncated `last.pt` (the resume point lost) and a full
disk a corrupt one. Through `yolov5_dattn.atomic` (temp file beside the target, fsync, rename):

- `BaseTrainer.save_model`: its `<path>.write_bytes(checkpoint)` calls (last.pt, best.pt, epochN.pt) become
  `atomic_write_bytes(<path>, checkpoint)`, edited in place so tracebacks keep ultralytics' line numbers;
- `strip_optimizer` (run by `final_eval` on last.pt and best.pt) and `Model.save` see `torch.save` as
  `atomic_save` (only their module's view of `torch` changes, so a patch of their loading composes with it);
- `Exporter.export_onnx`, `export_openvino`, `export_torchscript`, `export_ncnn`, `export_mnn`, `export_coreml`
  write into a staging folder beside the model
  (`.dattn-export.<pid>.<n>`), and their outputs are renamed into place once complete: a failed export leaves
  nothing behind and the previous export intact. A staging folder of a killed process is removed by the next
  export there.

A full disk is one `UserError` (`error:` line, exit 2) naming the file and the free space.
"""
import ast
import contextlib
import functools
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

from yolov5_dattn import atomic, patching
from yolov5_dattn.errors import UserError

__all__ = ["EXPORTS", "STEP", "apply"]

STEP = "atomic saves"
WHY_CHECKPOINT = "ultralytics writes checkpoints in place: a kill or a full disk mid-save destroys last.pt"
WHY_EXPORT = "ultralytics writes exports in place: a failed export leaves a half-written file or folder"
EXPORTS = ("export_onnx", "export_openvino", "export_torchscript", "export_ncnn", "export_mnn", "export_coreml")
_ATOMIC = "__import__('yolov5_dattn.atomic', fromlist=['_']).atomic_write_bytes"  # no name added to the host
_STAGING = "dattn-export"  # staging folders are `.dattn-export.<pid>.<n>` (atomic.remove_stale_temps' naming)


class _AtomicWrites(ast.NodeTransformer):
    """`<path>.write_bytes(<data>)` -> `atomic_write_bytes(<path>, <data>)`; counts the calls changed."""

    def __init__(self):
        self.count = 0

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "write_bytes" and len(node.args) == 1 and not node.keywords:
            self.count += 1
            call = ast.Call(func=ast.parse(_ATOMIC, mode="eval").body, args=[f.value, node.args[0]], keywords=[])
            for added in ast.walk(call.func):  # the host's line, for tracebacks
                ast.copy_location(added, node)
            return ast.copy_location(call, node)
        return node


def _atomic_save_model(save_model: Callable) -> Callable:
    """`save_model` recompiled with its checkpoint writes made atomic; RuntimeError when it writes none that way."""
    edit = _AtomicWrites()
    edited = patching.recompile(save_model, edit.visit)
    if edit.count == 0:
        raise RuntimeError("ultralytics BaseTrainer.save_model writes no `<path>.write_bytes(...)`: "
                           "yolov5_dattn.hosts.ultralytics.atomic_saves needs updating for this ultralytics")
    return edited


def _staging(parent: Path, avoid: str) -> Path:
    """A new private folder in `parent`. Its name holds no '.<letters>' part, so ultralytics' output names, made by
    replacing the model file's suffix (`avoid`) anywhere in the path, are unchanged inside it."""
    atomic.remove_stale_temps(parent / _STAGING)
    for _ in range(100):
        folder = parent / f".{_STAGING}.{os.getpid()}.{secrets.randbelow(10 ** 9)}"
        if avoid and avoid in folder.name:
            continue
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            return folder
    raise UserError(f"cannot export a model file named *{avoid}: rename it to end in .pt and export again")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publish(staging: Path, parent: Path) -> None:
    """Move each output in `staging` to `parent`: a file by an atomic rename over the previous one; a folder
    complete and flushed, swapped with the previous one (which is then removed)."""
    for new in sorted(staging.iterdir()):
        final = parent / new.name
        if new.is_dir():
            _fsync_tree(new)
            previous = staging / ".previous"
            if final.is_dir() and not final.is_symlink():
                os.replace(final, previous)
            os.replace(new, final)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            atomic.replace_with(new, final)


def _in(parent: Path, staging: Path, value: Any) -> Any:
    """`value` (a path, or a tuple starting with one) with the staging folder replaced by `parent`."""
    if isinstance(value, tuple) and value:
        return (_in(parent, staging, value[0]), *value[1:])
    if isinstance(value, (str, Path)) and str(value).startswith(str(staging)):
        moved = str(parent) + str(value)[len(str(staging)):]
        return Path(moved) if isinstance(value, Path) else moved
    return value


def _disk_full_cause(error: BaseException):
    """The full-disk OSError behind `error` (itself, or what it was raised from: exporters wrap it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if atomic.is_disk_full(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _staged(export: Callable) -> Callable:
    """`export(self)` writing into a staging folder beside `self.file`, its outputs moved into place on success."""
    @functools.wraps(export)
    def staged_export(self, *args, **kwargs):
        file = Path(self.file)
        parent = file.parent
        staging = _staging(parent, file.suffix)
        self.file = staging / file.name  # each format names its output after self.file
        try:
            result = export(self, *args, **kwargs)
            _publish(staging, parent)
            return _in(parent, staging, result)
        except Exception as e:
            full = _disk_full_cause(e)
            if full is not None:
                free = shutil.disk_usage(parent).free / 1e6
                raise UserError(f"cannot export {file}: {os.strerror(full.errno)} ({free:.1f} MB free in {parent}); "
                                f"nothing was written and earlier exports are kept: free some space and run "
                                f"again") from None
            raise
        finally:
            self.file = file
            shutil.rmtree(staging, ignore_errors=True)
    return staged_export


def _undecorated(method: Callable, name: str) -> Callable:
    """The function ultralytics' `@try_export` wraps (held in its closure), or None."""
    for cell in getattr(method, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            inner = cell.cell_contents
            if callable(inner) and getattr(inner, "__name__", None) == name:
                return inner
    return None


def apply() -> None:
    """Route ultralytics' checkpoint writes and exports through atomic writes (idempotent)."""
    import ultralytics.engine.exporter as exporter
    import ultralytics.engine.model as model
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics.engine.trainer import BaseTrainer
    with patching.applying(STEP):
        if not patching.is_patched(BaseTrainer, "save_model", WHY_CHECKPOINT):
            patching.patch(BaseTrainer, "save_model", _atomic_save_model(vars(BaseTrainer)["save_model"]),
                           why=WHY_CHECKPOINT)
        for module in (torch_utils, model):  # strip_optimizer, Model.save
            patching.override(module, "torch", "save", atomic.atomic_save, why=WHY_CHECKPOINT)
        for name in EXPORTS:
            if patching.is_patched(exporter.Exporter, name, WHY_EXPORT):
                continue
            method = vars(exporter.Exporter)[name]
            inner = _undecorated(method, name)
            # staged inside `try_export`, so its size check and 'saved as' line see the final path
            replacement = exporter.try_export(_staged(inner)) if inner is not None else _staged(method)
            patching.patch(exporter.Exporter, name, replacement, why=WHY_EXPORT)
