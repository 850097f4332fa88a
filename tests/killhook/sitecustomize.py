"""Loaded by Python at start-up when this folder is on PYTHONPATH (tests' subprocesses only).

Runs tests/netguard's guard (only one sitecustomize is imported), then, when $KILL_AFTER_WRITING names a
file (e.g. last.pt), SIGKILLs the process right after the first complete write of a file of that name: after
`torch.save` to that path returns, or after the `os.replace` that puts it in place (atomic saves). That is
exactly the state a crash at that moment leaves, with no timing involved.
"""
import os
import runpy
import signal
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "netguard" / "sitecustomize.py"))

_name = os.environ.get("KILL_AFTER_WRITING")


def _kill_if_target(path) -> None:
    if isinstance(path, (str, os.PathLike)) and Path(os.fspath(path)).name == _name:
        os.kill(os.getpid(), signal.SIGKILL)


if _name:
    import torch

    _replace, _save = os.replace, torch.save

    def _replace_then_kill(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        _kill_if_target(dst)

    def _save_then_kill(obj, f, *args, **kwargs):
        result = _save(obj, f, *args, **kwargs)
        _kill_if_target(f)
        return result

    os.replace, torch.save = _replace_then_kill, _save_then_kill
