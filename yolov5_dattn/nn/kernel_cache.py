"""A private cache for a compiled shared library: where `cpu_attention` keeps its kernel between runs.

Loading a shared library runs its constructors, so whoever can write the cache folder chooses code that runs in
this process. A checksum stored beside the file cannot prevent that: whoever plants a library writes its
checksum too. What prevents it is that nobody else can write there, so the rules are:

- The folder must be owned by this user and not writable by group or others (it is created 0700). Then only this
  user, or root, can put a library or its record there, and both can run code as this user anyway. A folder that
  fails is refused with one warning, and the library is built in a fresh private folder (mkdtemp, 0700) that is
  removed at exit. A cached file must also be a regular file of this user's, not writable by others.
- The folder is checked on an open descriptor and each file in it is reached relative to that descriptor, so a
  path swapped after the check (a symlink, a renamed folder) changes nothing.
- The library is hashed from one open descriptor and loaded from that same descriptor (`/proc/self/fd/N`): what
  was checked is what is loaded. Its bytes can then change only by a write from this user.
- The size and SHA-256 record beside it (`<name>.sha256`, written by the build) proves the file complete: a
  truncated library kills the process with SIGBUS when its missing pages are touched. A file that does not
  match its record is rebuilt over, never loaded.
- Processes starting together (DDP ranks) take an exclusive `flock` on `.lock` in the folder: the first one
  builds, the others wait and then find its build.

POSIX only (fcntl, descriptor-relative calls).
"""
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Tuple

__all__ = ("Cached", "fd_path", "fingerprint_of", "folder_problem", "open_or_build", "record_name")

LOGGER = logging.getLogger(__name__)
LOCK = ".lock"


class Cached(NamedTuple):
    """A library ready to load: `fd` is open on the bytes that were checked (the caller closes it), `path` says
    where it lies, `rebuilt` why a cached file there was replaced (None when it was loaded or built fresh)."""
    fd: int
    path: Path
    rebuilt: Optional[str]


def record_name(name: str) -> str:
    """The build record beside a cached library: its size and SHA-256."""
    return name + ".sha256"


def fd_path(fd: int) -> str:
    """A path that opens the file behind `fd` itself, whatever has since been renamed over its name."""
    return f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{fd}"


def fingerprint_of(fd: int) -> str:
    """'<size> <sha256>' of the whole file open at `fd`, read from that descriptor."""
    digest, size, offset = hashlib.sha256(), 0, 0
    while True:
        block = os.pread(fd, 1 << 20, offset)
        if not block:
            return f"{size} {digest.hexdigest()}"
        digest.update(block)
        size += len(block)
        offset += len(block)


def _not_private(st: os.stat_result) -> Optional[str]:
    """Why a folder or file with this status could hold someone else's code (None: only this user can write it)."""
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit]
    if writable:
        return f"is writable by {' and '.join(writable)} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def folder_problem(folder: Path) -> Optional[str]:
    """Why `folder` must not hold a library this process loads (None: it is private to this user)."""
    try:
        return _not_private(os.stat(folder))
    except OSError as e:
        return f"cannot be read ({e.strerror})"


class _Refused(Exception):
    """A folder that is not private to this user: the message says why."""


def _open_folder(folder: Path) -> int:
    """`folder` (created 0700 where missing) opened as a directory; raises _Refused or OSError."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    problem = _not_private(os.fstat(fd))
    if problem:
        os.close(fd)
        raise _Refused(problem)
    return fd


@lru_cache(maxsize=None)
def _private_folder(refused: Path, why: str, what: str) -> Path:
    """A fresh folder only this user can write (mkdtemp makes it 0700), removed at exit; warns once per refusal."""
    folder = Path(tempfile.mkdtemp(prefix="yolov5_dattn-"))
    import atexit
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    LOGGER.warning(f"yolov5-dattn: not using the {what} cache {refused}: it {why}; building in a private folder "
                   f"instead (to cache builds, point YOLOV5_DATTN_CACHE at a folder of yours that only you can "
                   f"write: chmod 700)")
    return folder


def _read_record(dir_fd: int, name: str) -> Optional[str]:
    try:
        fd = os.open(record_name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode().strip() if _not_private(os.fstat(fd)) is None else None
    except UnicodeDecodeError:
        return None
    finally:
        os.close(fd)


def _open_checked(dir_fd: int, name: str) -> Tuple[Optional[int], Optional[str]]:
    """(fd, None) open on `name` when it is this user's regular file matching its record, else (None, why not)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot be opened ({e.strerror})"
    st = os.fstat(fd)
    why = "is not a regular file" if not stat.S_ISREG(st.st_mode) else _not_private(st)
    if why is None:
        expected = _read_record(dir_fd, name)
        actual = fingerprint_of(fd)
        if expected is None:
            why = f"has no build record ({record_name(name)})"
        elif actual != expected:
            why = (f"does not match its build record (size and SHA-256: {actual.split()[0]} bytes, expected "
                   f"{expected.split()[0]})")
    if why is not None:
        os.close(fd)
        return None, why
    return fd, None


def _write_new(dir_fd: int, name: str, data: bytes, mode: int) -> Tuple[int, str]:
    """A new temp file for `name` in the folder, holding `data` flushed to disk: (its open fd, its temp name)."""
    partial = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits we want (and only those we keep matter)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(partial, dir_fd=dir_fd)
        raise
    return fd, partial


def _build_into(dir_fd: int, name: str, compile: Callable[[Path], None]) -> int:
    """Compile into a private temp folder, then write the library and its record into the cache folder (the
    record first: a crash between the two leaves a pair that does not match, rebuilt by the next run). Returns
    an fd on the cached library, whose bytes are those just hashed."""
    with tempfile.TemporaryDirectory(prefix="yolov5_dattn-build-") as build_dir:
        output = Path(build_dir) / name
        compile(output)
        data = output.read_bytes()
    record = f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
    record_fd, record_partial = _write_new(dir_fd, record_name(name), record, 0o600)
    os.close(record_fd)
    lib_fd, lib_partial = _write_new(dir_fd, name, data, 0o700)
    try:
        os.replace(record_partial, record_name(name), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.replace(lib_partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        os.close(lib_fd)
        for partial in (record_partial, lib_partial):
            try:
                os.unlink(partial, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        raise
    return lib_fd


def open_or_build(folder: Path, name: str, compile: Callable[[Path], None], what: str = "kernel") -> Cached:
    """The library `name` from `folder`, built first by `compile(output_path)` where it is missing or does not
    match its build record.

    A folder this user does not own, or that group or others can write, is refused with one warning: the library
    is then built in a private temp folder instead. Processes calling this together build once (see the module
    docstring). Load the result through `fd_path(cached.fd)`, then close the fd.

    Raises RuntimeError from `compile` (naming what was wrong with the cached file, if one was replaced) and
    OSError where even a private temp folder cannot be written.
    """
    try:
        dir_fd = _open_folder(folder)
    except _Refused as e:
        folder = _private_folder(folder, f"{e}, so someone else could choose the code this process loads", what)
        dir_fd = _open_folder(folder)
    except OSError as e:
        folder = _private_folder(folder, f"cannot be used ({e.strerror or e})", what)
        dir_fd = _open_folder(folder)
    try:
        lock_fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # released by the close below (and by the kernel if we die)
            fd, problem = _open_checked(dir_fd, name)
            if fd is not None:
                return Cached(fd, folder / name, None)
            try:
                fd = _build_into(dir_fd, name, compile)
            except RuntimeError as e:
                if problem:
                    raise RuntimeError(f"the cached {folder / name} {problem} and rebuilding it failed: {e}") from e
                raise
            return Cached(fd, folder / name, problem)
        finally:
            os.close(lock_fd)
    finally:
        os.close(dir_fd)
