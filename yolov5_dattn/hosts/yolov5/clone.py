"""A git clone of ultralytics/yolov5 (tag v7.0 or master) that builds, trains and loads our modules, offline.

`yolov5-dattn clone-setup <clone>` (`setup`) appends the same three lines to the clone's `models/__init__.py`
and `utils/__init__.py`:

    # >>> yolov5-dattn clone-setup (undo: yolov5-dattn clone-setup --undo <clone>)
    import yolov5_dattn.hosts.yolov5.clone; yolov5_dattn.hosts.yolov5.clone.install(__name__)  # noqa: E402,E702
    # <<< yolov5-dattn

Every entry script of a clone (train.py, val.py, detect.py, export.py, segment/*.py, hubconf.py) imports one
of those two packages before it builds or loads anything, so `install` runs first and gives the clone's own
modules (`models.yolo`, `utils.general`, ... and the running script) what the pip-package path gets: the
compatibility shims of `yolov5_dattn.hosts.yolov5.compat` (applied to the clone's host, `compat.Host.clone`), the
parse_model hook (C3_DAttention & co., no `eval`), the model summary with attention GFLOPs and the safe
checkpoint loader, which also allows the clone's model classes. When the process runs one of the clone's
entry scripts (`SCRIPT_TASKS`), the first parse of that script's own parser also adds `--trust-checkpoint`
and runs the pip scripts' checks (`run_checks.check_run`: inputs, weights, export formats, preflight) before
it returns, so bad input is one `error:` line and exit 2 before anything is written; export defaults to
ONNX opset 17 and fails (exit 2) when a requested format was not written. No module code goes into the
clone; `undo` removes exactly those lines again, with either line ending. Both files are checked (regular files
inside the clone, reached through no symbolic link, readable, UTF-8) before either is written, and they are
written atomically (a temp file beside each, renamed over it).
"""
import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Dict, List, Optional, Union

from yolov5_dattn.errors import UserError, one_line

HOOK_FILES = ("models/__init__.py", "utils/__init__.py")
BEGIN = "# >>> yolov5-dattn clone-setup (undo: yolov5-dattn clone-setup --undo <clone>)"
END = "# <<< yolov5-dattn"
BLOCK = f"{BEGIN}\nimport yolov5_dattn.hosts.yolov5.clone; yolov5_dattn.hosts.yolov5.clone.install(__name__)  # noqa: E402,E702\n{END}\n"
# written instead when a hook file does not end with a newline, so undo knows to take the added one away too
BLOCK_AFTER_NO_EOL = "\n" + BLOCK.replace(BEGIN, BEGIN + " (newline added above)", 1)

# a clone's entry scripts (path under its root) -> the task name of the checks (entrypoint.TASKS)
SCRIPT_TASKS = {
    "train.py": "train",
    "val.py": "val",
    "detect.py": "detect",
    "export.py": "export",
    "segment/train.py": "segment-train",
    "segment/val.py": "segment-val",
    "segment/predict.py": "segment-predict",
}

_installed: Dict[Path, bool] = {}  # clone root -> done (False while installing: the hooks import each other)


# ---- inside the clone's processes ---------------------------------------------------------------------
def install(package: str = "models") -> None:
    """Run by the hook in the clone's `models/__init__.py` / `utils/__init__.py` (`package` is that
    `__name__`): apply the compat shims to the clone's modules and register our modules into its
    parse_model. Idempotent; a hook that runs while the other one is installing returns at once."""
    from . import changes, compat

    root = Path(sys.modules[package].__file__).resolve().parent.parent
    if root in _installed:
        return
    _installed[root] = False
    try:
        host = compat.Host.clone(root)
        compat.apply(host)
        changes.apply("clone", host)  # parse_model hook, summary, allowlist, error lines, checks at first parse
    except BaseException:
        del _installed[root]
        raise
    _installed[root] = True


def script_task(root: Path) -> Optional[str]:
    """The task ('train', 'segment-predict', ...) of the clone entry script running as `__main__`, if the
    process runs one of the clone in `root`; None otherwise (hubconf.py, a user's own script, pytest)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return None
    try:
        return SCRIPT_TASKS.get(Path(path).resolve().relative_to(root).as_posix())
    except ValueError:
        return None


def _called_from_script_parse_opt() -> bool:
    """Whether the running script's own `parse_opt` is on the stack (not some other parser in the process)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "parse_opt" and frame.f_globals.get("__name__") == "__main__":
            return True
        frame = frame.f_back
    return False


def check_at_first_parse(host) -> None:
    """When the process runs one of the clone's entry scripts, `_check_at_first_parse` for its task."""
    task = script_task(host.root)
    if task is not None:
        _check_at_first_parse(host, task)


def _check_at_first_parse(host, task: str) -> None:
    """Make the first parse by the running script's `parse_opt` add our flags, then run the pip scripts'
    checks (`run_checks.check_run`) on the result before returning it. The script's module is not complete
    when the hook runs (it is importing models/utils), so this is the first point where its options exist.
    Bad input: `error: <one line>` on stderr and exit 2, before the script creates its run folder."""
    from yolov5_dattn import patching
    why = "the clone's entry script gets our flags and checks at its first parse"
    if patching.is_patched(argparse.ArgumentParser, "parse_known_args", why):
        return
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        if not _called_from_script_parse_opt():
            return real(self, args, namespace)
        patching.undo(where=lambda c: c.replacement is parse_known_args)  # once per process
        from yolov5_dattn.core.onnx_opset import MIN_ONNX_OPSET
        from . import summary
        from .deploy import DEFAULT_OPSET
        from .flags import OUR_FLAGS, add_our_flags
        from .run_checks import error_line
        add_our_flags(self, task, pip_defaults=False)
        if task == "export" and (self.get_default("opset") or DEFAULT_OPSET) < MIN_ONNX_OPSET:
            self.set_defaults(opset=DEFAULT_OPSET)  # v7.0 says 12, which has no grid_sample; an explicit one is checked
        opt, rest = real(self, args, namespace)
        from yolov5_dattn.shipped import resolve_options
        resolve_options(opt)  # bare shipped names (--cfg yolov5n_c3_dattn.yaml), as the pip scripts take them
        ours = argparse.Namespace(**{k: opt.__dict__.pop(k, None) for k in OUR_FLAGS})
        try:
            _check(host, task, opt, ours)
        except (UserError, AssertionError) as e:  # YOLOv5's own input asserts carry a message
            if error_line(e) is None:
                raise
            print(error_line(e), file=sys.stderr)
            raise SystemExit(2) from None
        with patching.applying("clone.check_at_first_parse"):
            summary.install_sizes(host)  # the script's functions exist now
            if task == "export":
                _export_fails_loudly(host, ours.sampler)
        return opt, rest

    patching.patch(argparse.ArgumentParser, "parse_known_args", parse_known_args, why=why)


def _check(host, task: str, opt, ours) -> None:
    """`run_checks.check_run` with the clone's `utils.general` (its data/ and hyps, its dataset paths)."""
    import os

    from . import entrypoint, run_checks
    from .checkpoints import TRUST_ENV
    if task in entrypoint.TRAIN_TASKS and getattr(opt, "resume", False) and not getattr(opt, "evolve", None):
        # resume.check_resume knows the pip package's classes and scripts; the clone's trainer checks its own
        if ours.trust_checkpoint:
            os.environ[TRUST_ENV] = "1"
        return
    run_checks.check_run(opt, task, ours, general=host.module("utils.general"))


def _export_fails_loudly(host, sampler=None) -> None:
    """The clone's export.py `main(opt)` logs a failed format and exits 0; run it through
    `export_run.run_export` instead (UserError, so exit 2, and no half-written file, when a format failed),
    with DAttention's `sampler` (--sampler, None for the formats' default)."""
    from .export_run import run_export
    script = host.loaded("export")
    if script is None or not callable(getattr(script, "run", None)):
        return
    from yolov5_dattn import patching

    def main(opt):
        """export.py's main through `export_run.run_export`: a format that was not written is exit 2."""
        return run_export(script, opt, sampler)

    patching.patch(script, "main", main, why="a clone's export fails loudly when a format was not written")


def one_line_user_errors() -> None:
    """A UserError that reaches the top of a clone's script prints `error: <one line>` and exits with 2
    (as the plugin's own scripts do), not a traceback; any other exception keeps Python's handling."""
    from yolov5_dattn import patching
    why = "a UserError at the top of a clone's script is one error line and exit 2"
    if patching.is_patched(sys, "excepthook", why):
        return
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        if not issubclass(kind, UserError):
            return previous(kind, value, tb)
        print(f"error: {one_line(value)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        import os
        os._exit(2)  # the only way to choose the status from an excepthook

    patching.patch(sys, "excepthook", excepthook, why=why)


# ---- clone-setup ------------------------------------------------------------------------------------------
def _hook_files(clone: Union[str, Path]) -> List[Path]:
    """The clone's hook files; UserError when `clone` is not a YOLOv5 clone."""
    clone = Path(clone)
    if not clone.is_dir():
        raise UserError(f"{clone}: no such folder: pass the folder of your git clone of ultralytics/yolov5")
    missing = [name for name in ("models/yolo.py", "train.py", *HOOK_FILES) if not (clone / name).is_file()]
    if missing:
        raise UserError(f"{clone}: not a YOLOv5 clone (no {', '.join(missing)}): pass the folder that holds "
                        f"train.py, models/ and utils/")
    return [clone / name for name in HOOK_FILES]


def _read_hook_file(clone: Path, name: str, utf8: bool) -> bytes:
    """The bytes of the hook file `name` (e.g. 'models/__init__.py'), once it is known that clone-setup may
    rewrite it: a regular file inside the clone, reached through no symbolic link (a link may point anywhere,
    and the hook would be written there), readable, and UTF-8 where `utf8` (the hook is UTF-8 text appended to
    it). UserError naming the file and what to do otherwise."""
    path = clone / name
    for depth in range(1, len(Path(name).parts) + 1):
        part = clone.joinpath(*Path(name).parts[:depth])
        if part.is_symlink():
            raise UserError(f"{part}: is a symbolic link (to {os.readlink(part)}): clone-setup writes only regular "
                            f"files inside the clone; replace the link by a copy of what it points to and run again")
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{path}: not a regular file: clone-setup writes only regular files inside the clone")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}): make it readable and run again") from None
    if utf8:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): clone-setup "
                            f"appends UTF-8 lines to it; save it as UTF-8 and run again") from None
    return raw


def _read_hook_files(clone: Union[str, Path], utf8: bool) -> Dict[Path, bytes]:
    """{path: bytes} of both hook files, every check done on both before either is written (see
    `_read_hook_file`)."""
    paths = _hook_files(clone)
    return {path: _read_hook_file(Path(clone), name, utf8) for name, path in zip(HOOK_FILES, paths)}


def _replace_all(new: Dict[Path, bytes], old: Dict[Path, bytes]) -> None:
    """Give each file in `new` its new bytes atomically (a temp file beside it, flushed, renamed over it). Every
    temp file is complete before the first rename, and a rename that fails puts back the files replaced before
    it: the clone is left as it was or fully changed, never with one hook file changed and not the other.
    UserError naming the file when the disk refuses."""
    from yolov5_dattn import atomic

    for path in new:
        if not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK):
            raise UserError(f"{path}: not writable (clone-setup replaces it by a new file in {path.parent}): make "
                            f"both writable and run again")
    temps: Dict[Path, Path] = {}
    replaced: List[Path] = []
    path = next(iter(new), None)
    try:
        for path, data in new.items():
            atomic.remove_stale_temps(path)
            temps[path] = atomic.temp_path(path)
            temps[path].write_bytes(data)
        for path, tmp in temps.items():
            atomic.replace_with(tmp, path)
            replaced.append(path)
    except OSError as e:
        for done in replaced:
            tmp = atomic.temp_path(done)
            tmp.write_bytes(old[done])
            atomic.replace_with(tmp, done)
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
        raise UserError(f"{path}: cannot be written ({e.strerror}): the clone is unchanged; free some space or "
                        f"make it writable and run again") from None


def is_set_up(clone: Union[str, Path]) -> Dict[str, bool]:
    """{'models/__init__.py': True, ...}: which hook files of `clone` hold the hook."""
    return {name: BEGIN.encode() in path.read_bytes() for name, path in zip(HOOK_FILES, _hook_files(clone))}


def setup(clone: Union[str, Path]) -> List[Path]:
    """Append the hook to the clone's hook files that lack it. Returns the files changed (none when set up
    already). Both files are checked (`_read_hook_file`: regular, no symbolic link, inside the clone, readable,
    UTF-8) before either is written, and written atomically together (`_replace_all`)."""
    old = _read_hook_files(clone, utf8=True)
    new = {}
    for path, raw in old.items():
        text = raw.decode("utf-8")
        if BEGIN in text:
            continue
        block = BLOCK if not text or text.endswith("\n") else BLOCK_AFTER_NO_EOL
        newline = b"\r\n" if b"\r\n" in raw else b"\n"  # keep a Windows checkout's line endings
        new[path] = raw + block.encode("utf-8").replace(b"\n", newline)
    _replace_all(new, old)
    return list(new)


def _without_hook(path: Path, raw: bytes) -> bytes:
    """`raw` with the lines `setup` wrote taken out. They are found with either line ending, whatever the rest
    of the file uses (an editor or git may have changed the user's lines, or all of them); UserError when they
    are not there exactly once."""
    written = [block.encode("utf-8").replace(b"\n", newline)
               for block in (BLOCK_AFTER_NO_EOL, BLOCK) for newline in (b"\n", b"\r\n")]
    found = [encoded for encoded in written if encoded in raw]
    if len(found) != 1 or raw.count(found[0]) != 1:
        raise UserError(f"{path}: the yolov5-dattn lines were edited; delete the lines from '{BEGIN[:30]}...' "
                        f"to '{END}' by hand")
    return raw.replace(found[0], b"")


def undo(clone: Union[str, Path]) -> List[Path]:
    """Remove the hook from the clone's hook files, leaving the rest of each byte-identical (the user's own
    edits since `setup` kept). Returns the files changed. UserError when a hook was edited so that it cannot be
    removed exactly; both files are checked before either is written, as in `setup`."""
    old = _read_hook_files(clone, utf8=False)
    new = {path: _without_hook(path, raw) for path, raw in old.items() if BEGIN.encode() in raw}
    _replace_all(new, old)
    return list(new)
