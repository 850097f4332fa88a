"""Atomic file writes: a checkpoint is either the previous one or the new one, never a half-written file.

`atomic_save(obj, path)` is `torch.save` into a temp file beside `path` (same folder, so the rename cannot cross
file systems), flushed to disk (fsync), then renamed over `path` (`os.replace`: atomic on POSIX and Windows).
A kill at any point leaves the previous file intact; a full disk removes the temp file and raises a `UserError`
naming the file and the free space, the previous file kept. `atomic_write_bytes(data, path)` is the same for bytes
serialized already (ultralytics' trainer). `replace_with(tmp, path)` does the last step for files written by
someone else's code (exports).

YOLOv5's own `torch.save` calls are routed here by `policy.shim_atomic_checkpoint_saves`, ultralytics' by
`yolov5_dattn.hosts.ultralytics.atomic_saves`.
"""
import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

from yolov5_dattn.errors import UserError

__all__ = ["atomic_save", "atomic_write_bytes", "full_disk_error", "is_disk_full", "remove_stale_temps",
           "replace_with", "temp_path"]

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _write_all(fd: int, data) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked). The one place bytes reach the disk."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


class _Sink:
    """A write-only file object over a raw fd that remembers the OSError it raised.

    torch.save turns an exception raised by `write` into a RuntimeError ("unexpected pos ..."); the recorded
    error keeps the real cause (e.g. ENOSPC) for the message.
    """

    def __init__(self, fd: int):
        self.fd, self.error = fd, None

    def write(self, data) -> int:
        try:
            _write_all(self.fd, data)
        except OSError as e:
            self.error = e
            raise
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here; `atomic_save` fsyncs the fd."""


def temp_path(path: Union[str, Path], suffix: str = ".tmp") -> Path:
    """A new empty temp file beside `path`, named for this process: `.<name>.<pid>.<random><suffix>`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(path: Union[str, Path]) -> None:
    """Remove temp files (and temp folders) of `path`, named `.<name>.<pid>.*` (see `temp_path`), left by processes
    killed mid-write (their pid is gone)."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _mode_for(path: Path) -> int:
    """The permissions `open()` would give a new file (mkstemp makes 0600), or those of the file replaced."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_disk_full(error: BaseException) -> bool:
    """True for the OSError of a write that ran out of space (ENOSPC, or EDQUOT: the user's quota)."""
    return isinstance(error, OSError) and error.errno in _FULL


def full_disk_error(path: Path, error: OSError) -> UserError:
    """The one-line error for a write of `path` that ran out of space."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    return UserError(f"cannot write {path}: {os.strerror(error.errno)} ({free} in {path.parent}); {kept}: free "
                     f"some space, or write the run to another folder, and run again")


def replace_with(tmp: Union[str, Path], path: Union[str, Path]) -> None:
    """Flush the finished file `tmp` to disk and rename it over `path` (same folder)."""
    tmp, path = Path(tmp), Path(path)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, _mode_for(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_atomically(path: Path, write: Callable[[_Sink], None]) -> None:
    """`write(sink)` into a temp file beside `path`, fsync, rename over `path`; on any failure the temp file is
    removed and `path` untouched (a full disk: `full_disk_error`)."""
    remove_stale_temps(path)
    tmp = temp_path(path)
    sink = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            sink = _Sink(fd)
            write(sink)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = sink.error if sink is not None and sink.error is not None else e
        if is_disk_full(cause):
            raise full_disk_error(path, cause) from None
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, f, *args, **kwargs) -> None:
    """`torch.save(obj, f, ...)`, atomically when `f` is a path (a file object is written as given).

    Raises UserError (one line, naming the file and the free space) when the disk is full; the previous file at
    `f` is then untouched and no temp file is left.
    """
    # torch.serialization.save, not torch.save: ultralytics (imported by yolov5) replaces the latter by a version
    # that retries on errors, which into one open file would append a second copy after a partial first one
    if not isinstance(f, (str, os.PathLike)):
        return torch.serialization.save(obj, f, *args, **kwargs)
    _write_atomically(Path(f), lambda sink: torch.serialization.save(obj, sink, *args, **kwargs))


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> int:
    """`Path(path).write_bytes(data)`, atomically: the file at `path` is the previous one or `data`, never a part.

    Returns len(data), as `Path.write_bytes` does. Raises UserError (one line) when the disk is full, the
    previous file kept and no temp file left.
    """
    _write_atomically(Path(path), lambda sink: sink.write(data))
    return len(memoryview(data).cast("B"))
