"""`yolov5-dattn yolo <args>` in this fresh process with one fault injected (tests' subprocesses only):

    python tests/ultralytics_faults.py <fault> <yolo args...>

Training faults strike after epoch 0's checkpoints are written (ultralytics' `on_model_save` callback), so the
run has a complete last.pt / best.pt to lose:
    stop             SIGKILL at once (an interrupted run that can be resumed);
    kill-mid-save    SIGKILL half-way through the bytes of the next checkpoint write;
    full-disk        the next checkpoint write fails with ENOSPC after 50 kB.
Export faults strike inside the format's own writer:
    onnx-kill        `onnx.save` writes half the model, then SIGKILL;
    onnx-full-disk   `onnx.save` writes half the model, then fails with ENOSPC;
    openvino-full-disk  `openvino.save_model` writes its files, the .xml cut to half, then fails with ENOSPC.
    none             no fault (the command as our CLI runs it).
The faults sit at the byte-writing seam (`yolov5_dattn.atomic._write_all`) or in the writer library, never in the
code under test.
"""
import errno
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout under test

from yolov5_dattn.cli.yolo import main  # noqa: E402

import yolov5_dattn.hosts.ultralytics as host  # noqa: E402

host.use_policy()  # what our commands run under

from yolov5_dattn import atomic  # noqa: E402

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
_write_all = atomic._write_all


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_half_way(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    _write_all(fd, view[:len(view) // 2])
    _kill()


def _full_after_50k(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    _write_all(fd, view[:50_000])
    raise FULL


def _on_model_save(fault):
    def strike(trainer) -> None:
        if trainer.epoch == 0:
            fault()
    return strike


def _half_onnx(then):
    def save(model, f, *args, **kwargs):
        data = model.SerializeToString()
        Path(f).write_bytes(data[:len(data) // 2])
        then()
    return save


def _raise_full() -> None:
    raise FULL


def arm(fault: str) -> None:
    """Install `fault` (see the module docstring)."""
    if fault == "none":
        return
    if fault in ("stop", "kill-mid-save", "full-disk"):
        from ultralytics.utils.callbacks.base import default_callbacks
        action = {"stop": _kill,
                  "kill-mid-save": lambda: setattr(atomic, "_write_all", _kill_half_way),
                  "full-disk": lambda: setattr(atomic, "_write_all", _full_after_50k)}[fault]
        default_callbacks["on_model_save"].append(_on_model_save(action))
    elif fault in ("onnx-kill", "onnx-full-disk"):
        import onnx
        onnx.save = _half_onnx(_kill if fault == "onnx-kill" else _raise_full)
    elif fault == "openvino-full-disk":
        import openvino
        real = openvino.save_model

        def save_model(model, path, *args, **kwargs):
            real(model, path, *args, **kwargs)
            xml = Path(path)
            xml.write_bytes(xml.read_bytes()[:xml.stat().st_size // 2])
            raise FULL
        openvino.save_model = save_model
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
