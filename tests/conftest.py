"""Shared fixtures: a tiny synthetic dataset, a network guard, tiny trained and calibrated checkpoints, and the
scripts of this checkout as modules.

Everything is session-scoped so the whole suite trains each model once (n-scale, 64 px, 1 epoch, a few
images); tests that need a trained detector or segmenter reuse `trained_det` / `trained_seg`.
"""
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List

import pytest

import yolov5_dattn  # noqa: F401  (the compat shims must run before any test imports yolov5)

REPO = Path(__file__).resolve().parents[1]
DET_CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"
SEG_CFG = REPO / "configs" / "segment" / "yolov5n-seg_c3_dattn.yaml"
NETGUARD = Path(__file__).resolve().parent / "netguard"  # a sitecustomize that blocks sockets in subprocesses
IMGSZ = 64
TRAIN_FLAGS = ["--imgsz", str(IMGSZ), "--batch-size", "4", "--device", "cpu", "--workers", "0"]


def load_script(name: str) -> ModuleType:
    """`scripts/<name>` of this checkout as a module (loaded, not run as `__main__`), to call its functions."""
    path = REPO / "scripts" / name
    spec = importlib.util.spec_from_file_location(Path(name).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def network_attempts() -> List[str]:
    """Blocks internet sockets and DNS for the whole session; returns the list of what was attempted.

    Workflow tests assert it stays empty: a guard that only raised could be swallowed by YOLOv5's
    try/except blocks, the record cannot.
    """
    attempts: List[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    real_create_connection = socket.create_connection

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address}")
            raise OSError("network blocked by tests/conftest.py")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host}")
        raise socket.gaierror("network blocked by tests/conftest.py")

    def create_connection(address, *args, **kwargs):
        attempts.append(f"create_connection {address}")
        raise OSError("network blocked by tests/conftest.py")

    socket.socket.connect, socket.getaddrinfo, socket.create_connection = connect, getaddrinfo, create_connection
    yield attempts
    socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo
    socket.create_connection = real_create_connection


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict:
    """B's generator: 8 train / 4 val images of 64 px, det + seg labels, a 6-frame letterboxed video."""
    from yolov5_dattn.demo_data import make_demo_data
    return make_demo_data(tmp_path_factory.mktemp("data"), n_train=8, n_val=4, imgsz=IMGSZ, video_frames=6)


def run_task(task: str, *args: str, callbacks=None) -> int:
    """Run a script's task in this process (as `scripts/<task>.py args`); returns its exit status."""
    from yolov5_dattn.hosts.yolov5.entrypoint import main
    return main(task, [str(a) for a in args], callbacks=callbacks)


def run_yolo(*args) -> int:
    """Run `yolov5-dattn yolo <args>` (the ultralytics host) in this process; returns its exit status."""
    from yolov5_dattn.cli.yolo import main
    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def trained_det(demo, network_attempts, tmp_path_factory) -> Path:
    """A detection run of `yolov5n_c3_dattn` (1 epoch, plots on); returns its run folder."""
    project = tmp_path_factory.mktemp("runs") / "train"
    rc = run_task("train", "--cfg", DET_CFG, "--data", demo["det_yaml"], "--epochs", "1", *TRAIN_FLAGS,
                  "--project", project, "--name", "exp")
    assert rc == 0
    return project / "exp"


@pytest.fixture(scope="session")
def trained_seg(demo, network_attempts, tmp_path_factory) -> Path:
    """A segmentation run of `yolov5n-seg_c3_dattn` (1 epoch, no plots); returns its run folder."""
    project = tmp_path_factory.mktemp("runs") / "train-seg"
    rc = run_task("segment-train", "--cfg", SEG_CFG, "--data", demo["seg_yaml"], "--epochs", "1", *TRAIN_FLAGS,
                  "--noplots", "--project", project, "--name", "exp")
    assert rc == 0
    return project / "exp"


def run_script(script: str, *args: str, cwd: Path, log: Path, wait: bool = True):
    """Run `scripts/<script>` in a fresh Python whose internet sockets are blocked and logged to `log`.

    Returns the CompletedProcess (stdout/stderr captured), or the running Popen when `wait` is False.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(log)}
    command = [sys.executable, str(REPO / "scripts" / script), *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def pytest_collection_finish(session):
    """Starts the background builds of the kernel variants that collected tests use (tests/kernel_variants.py)."""
    import kernel_variants
    wanted = {item.callspec.params.get("kernel_isa") for item in session.items if hasattr(item, "callspec")}
    kernel_variants.start(name for name in kernel_variants.NAMES if name in wanted)


def pytest_sessionfinish(session):
    """Ends the kernel variants' background builds, if still running, and removes their caches."""
    import kernel_variants
    kernel_variants.stop()


def pytest_configure(config):
    """Registers the `slow` marker (long tests; they still run by default, `-m "not slow"` skips them), and makes
    the run's folder for the kernel variants (before pytest-xdist starts its workers, which share it)."""
    import kernel_variants
    kernel_variants.prepare()
    config.addinivalue_line("markers", "slow: takes over about a minute; runs by default, -m 'not slow' skips it")


# ---- ultralytics: data, the `yolo` CLI under the network guard, one trained detector (shared by
# tests/ultralytics/test_ultralytics_workflow.py and tests/ultralytics/test_ultralytics_analysis.py, so the suite trains it once)
U_TRAIN = ["epochs=1", "batch=4", f"imgsz={IMGSZ}", "device=cpu", "workers=0", "exist_ok=True", "plots=False"]


@pytest.fixture(scope="session")
def udata(tmp_path_factory) -> dict:
    """The demo generator's data in a folder of its own (ultralytics writes its own label caches there)."""
    from yolov5_dattn.demo_data import make_demo_data
    return make_demo_data(tmp_path_factory.mktemp("udata"), n_train=8, n_val=4, imgsz=IMGSZ, video_frames=6)


def yolo(*args, cwd: Path, log: Path) -> subprocess.CompletedProcess:
    """`python scripts/yolo.py args...` with the network blocked and every attempt logged to `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(log)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "yolo.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def ok(result: subprocess.CompletedProcess, log: Path) -> str:
    """The output of a `yolo` run that succeeded without a network attempt (even a swallowed one)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not log.exists(), log.read_text()
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def trained_u(udata, tmp_path_factory) -> Path:
    """`yolo train model=yolo11n-c3k2-dattn.yaml` (a shipped name, scale n by name); returns the run folder."""
    work = tmp_path_factory.mktemp("utrain")
    out = ok(yolo("train", "model=yolo11n-c3k2-dattn.yaml", f"data={udata['det_yaml']}", *U_TRAIN,
                  f"project={work}", "name=det", cwd=work, log=work / "net.log"), work / "net.log")
    assert "YOLO11n-c3k2-dattn summary" in out and " 0.0 GFLOPs" not in out
    return work / "det"


@pytest.fixture(scope="session")
def calibrated_yolov5(tmp_path_factory):
    """A random-init, calibrated yolov5n_c3_dattn saved as YOLOv5 saves one, and its fused eval forward (built
    once; tests copy the file before exporting beside it)."""
    from calibrated_models import calibrated_yolov5_checkpoint
    return calibrated_yolov5_checkpoint(tmp_path_factory.mktemp("calibrated-v5") / "best.pt", DET_CFG)


@pytest.fixture(scope="session")
def calibrated_ultralytics(tmp_path_factory):
    """A random-init, calibrated yolo11n-c3k2-dattn saved by ultralytics, and its fused eval forward (built once)."""
    from calibrated_models import calibrated_ultralytics_checkpoint
    return calibrated_ultralytics_checkpoint(tmp_path_factory.mktemp("calibrated-u") / "u.pt")
