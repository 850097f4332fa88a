"""No noise a user must learn to ignore: the pkg_resources deprecation warning at import, OpenCV's
"[ERROR] ... retrieveFrame" line at the end of every video, YOLOv5's "github: skipping check" line."""
import os
import subprocess
import sys

import cv2

from conftest import IMGSZ, run_script

NOISE = ("pkg_resources", "retrieveFrame", "[ERROR", "skipping check")


def _import_stderr(pythonpath=None) -> str:
    env = {**os.environ, **({} if pythonpath is None else {"PYTHONPATH": str(pythonpath)})}
    return subprocess.run([sys.executable, "-W", "default", "-c", "import yolov5_dattn"], env=env,
                          capture_output=True, text=True, timeout=300, check=True).stderr


def test_import_prints_no_pkg_resources_warning(tmp_path):
    assert "pkg_resources" not in _import_stderr()
    # setuptools < 81 warns when pkg_resources is imported (the installed setuptools may be newer): stand in
    # for it with a module that warns the same way
    (tmp_path / "pkg_resources.py").write_text(
        "import warnings\n"
        "warnings.warn('pkg_resources is deprecated as an API. See https://setuptools.pypa.io/en/latest/"
        "pkg_resources.html', UserWarning, stacklevel=2)\n"
        "from packaging.version import parse as parse_version\n")
    direct = subprocess.run([sys.executable, "-W", "default", "-c", "import pkg_resources"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert "pkg_resources is deprecated" in direct.stderr  # the stand-in does warn
    assert "pkg_resources" not in _import_stderr(tmp_path)


def test_segment_trainer_skips_git_check_silently(capsys):
    from yolov5.segment import train
    train.check_git_status()  # what segment/train.py's main calls first
    out = capsys.readouterr()
    assert "skipping check" not in out.out + out.err


def _frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def test_detect_on_video_prints_no_noise(trained_det, demo, tmp_path):
    log = tmp_path / "net.log"
    result = run_script("detect.py", "--weights", trained_det / "weights" / "best.pt", "--source", demo["video"],
                        "--imgsz", IMGSZ, "--device", "cpu", "--project", tmp_path, "--name", "video",
                        cwd=tmp_path, log=log)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert [n for n in NOISE if n in output] == [], output[-3000:]
    assert _frames(tmp_path / "video" / demo["video"].name) == _frames(demo["video"]) > 0  # every frame written
    assert not log.exists()


def test_video_loader_reads_every_frame_without_opencv_error(demo, capfd):
    from yolov5.utils.dataloaders import LoadImages  # detect's and segment predict's loader
    capfd.readouterr()
    frames = [im0.shape for _, _, im0, _, _ in LoadImages(str(demo["video"]), img_size=IMGSZ)]
    assert len(frames) == _frames(demo["video"]) > 0
    assert "retrieveFrame" not in capfd.readouterr().err  # OpenCV logs from C++, straight to fd 2
