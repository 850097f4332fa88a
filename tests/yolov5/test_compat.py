"""One test per compatibility shim; each fails when its shim is not applied (numpy 2.4, Pillow ≥10,
torch 2.15, setuptools ≥81, offline)."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DET_CFG, REPO
from yolov5_dattn.core.offline import local_font
from yolov5_dattn.hosts.yolov5 import compat, policy, repairs
from yolov5_dattn.errors import UserError

compat.apply_entrypoints()


def test_pkg_resources(monkeypatch):
    monkeypatch.delitem(sys.modules, "pkg_resources", raising=False)
    repairs.shim_pkg_resources()
    import pkg_resources
    assert pkg_resources.parse_version("1.10") > pkg_resources.parse_version("1.9")


def test_pkg_resources_stand_in_without_setuptools_pkg_resources(monkeypatch, tmp_path):
    """As on setuptools >=81: the stand-in serves yolov5's parse_version and pytest's syspath_prepend."""
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # `import pkg_resources` raises ImportError
    repairs.shim_pkg_resources()
    stand_in = sys.modules["pkg_resources"]
    assert stand_in is not None and "stand-in" in stand_in.__doc__
    assert stand_in.parse_version("1.10") > stand_in.parse_version("1.9")
    monkeypatch.syspath_prepend(str(tmp_path))  # calls pkg_resources.fixup_namespace_packages
    assert sys.path[0] == str(tmp_path)


def test_offline_ultralytics(monkeypatch):
    """ultralytics' online probe answers offline without asking DNS (without the shim it resolves two names)."""
    import socket
    from ultralytics.utils import is_online
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    policy.shim_offline_ultralytics()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("DNS asked"))
    assert is_online() is False


def test_numpy_trapz(monkeypatch):
    from yolov5.utils.metrics import compute_ap
    monkeypatch.delattr(np, "trapz", raising=False)
    repairs.shim_numpy_trapz()
    recall = np.linspace(0.01, 1.0, 50)
    ap, _, _ = compute_ap(recall, np.ones_like(recall))  # a perfect detector
    assert ap == pytest.approx(1.0, abs=0.01)


def test_pil_getsize_and_offline_font(monkeypatch, tmp_path):
    from PIL import ImageFont
    from yolov5.utils import general, plots
    monkeypatch.delattr(ImageFont.FreeTypeFont, "getsize", raising=False)
    repairs.shim_pil_getsize()
    monkeypatch.setattr(general, "CONFIG_DIR", tmp_path)  # no Arial.ttf anywhere
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("font download"))
    font = plots.check_pil_font("Arial.ttf", size=12)
    # a font already on disk: a system Arial where matplotlib knows one, else matplotlib's DejaVuSans
    assert Path(font.path).is_file() and not Path(font.path).is_relative_to(tmp_path)
    assert Path(font.path) == local_font("Arial.ttf", tmp_path)
    image = np.zeros((64, 160, 3), np.uint8)
    annotator = plots.Annotator(image, pil=True)
    annotator.box_label([10, 30, 60, 60], "circle 0.9", color=(255, 0, 0))
    drawn = np.asarray(annotator.result())
    assert drawn[:30].any()  # the label box above the bounding box was drawn (needs getsize)


def test_no_pip_installs(monkeypatch):
    import subprocess
    from yolov5.utils import general
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: pytest.fail("pip was run"))
    assert general.check_requirements(("surely-not-installed-package>=99",)) is True


def test_no_hub_lookup_for_local_files(tmp_path, monkeypatch):
    import huggingface_hub
    from yolov5.utils import downloads
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: pytest.fail("asked the hub"))
    local = tmp_path / "best.pt"
    local.write_bytes(b"x")
    assert downloads.attempt_download_from_hub(str(local)) is None
    assert downloads.attempt_download_from_hub("runs/train/exp/weights/missing.pt") is None


def test_missing_weights_fail_fast(monkeypatch, tmp_path):
    import requests
    import subprocess
    from yolov5.models import experimental
    monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("GitHub API asked"))
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: pytest.fail("git tag run"))
    with pytest.raises(UserError, match="not found"):
        experimental.attempt_load(str(tmp_path / "yolov5s.pt"))


def test_no_dataset_downloads(tmp_path):
    from yolov5.utils import general
    marker = tmp_path / "downloaded"
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a]\n"
                    f"download: bash touch {marker}\n")
    with pytest.raises(UserError, match="--data"):
        general.check_dataset(str(data))
    assert not marker.exists()


def test_safe_torch_load_in_yolov5(tmp_path):
    """torch ≥2.6's weights_only default refuses whole-module checkpoints; YOLOv5's loader now works."""
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import DetectionModel
    path = tmp_path / "model.pt"
    torch.save({"model": DetectionModel(str(DET_CFG), nc=3).half()}, path)
    with pytest.raises(Exception):
        torch.load(path)  # the plain default: refused
    model = attempt_load(str(path), device="cpu", fuse=False)
    assert model.yaml["nc"] == 3 and len(model.stride) == 3


def test_segment_detect_not_pickled(tmp_path):
    """A checkpoint holding a Segment head loads through the safe loader (without the shim it needs
    builtins.getattr, which the allowlist refuses), and the head still runs."""
    from yolov5.models.yolo import Segment
    from yolov5_dattn.hosts.yolov5.checkpoints import load
    anchors = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
    torch.save({"model": Segment(nc=3, anchors=anchors, ch=(16, 32, 64))}, tmp_path / "seg.pt")
    head = load(tmp_path / "seg.pt", trust=False)["model"]
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    head.eval()
    xs = [torch.rand(1, c, 64 // s, 64 // s) for c, s in ((16, 8), (32, 16), (64, 32))]
    pred, proto, _ = head(xs)
    assert pred.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 5 + 3 + 32) and proto.shape == (1, 32, 16, 16)


def test_legacy_onnx_exporter(tmp_path):
    """The dynamo exporter (torch ≥2.9 default) needs onnxscript; YOLOv5's export must not use it."""
    import onnx
    from yolov5 import export
    path = tmp_path / "m.onnx"
    export.torch.onnx.export(torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8), str(path), opset_version=17)
    assert onnx.load(str(path)).graph.node[0].op_type == "Conv"


def test_autocast_warning_silenced_for_yolov5_only():
    import yolov5.train
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest installs its own filters per test: start from "show all"
        repairs.shim_quiet_autocast_warning()
        exec("torch.cuda.amp.autocast(False)", vars(yolov5.train))  # as called from YOLOv5's train.py
        torch.cuda.amp.autocast(False)  # as called from anyone else's code
    assert [str(w.filename) for w in caught if "autocast" in str(w.message)] == [__file__]


def _recording_train(monkeypatch, module):
    """Replace `module.train` by a recorder of its (opt, callbacks) arguments."""
    calls = []
    monkeypatch.setattr(module, "train", lambda hyp, opt, device, callbacks: calls.append((opt, callbacks)))
    return calls


def test_fresh_callbacks_per_main_call(monkeypatch, demo, tmp_path):
    """Stock `main(opt, callbacks=Callbacks())` hands every call the same instance."""
    import yolov5.train
    calls = _recording_train(monkeypatch, yolov5.train)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    for _ in range(2):
        opt = yolov5.train.parse_opt(True)
        opt.data, opt.cfg, opt.weights, opt.device, opt.project = demo["det_yaml"], DET_CFG, "", "cpu", tmp_path
        yolov5.train.main(opt)
    assert calls[0][1] is not calls[1][1]


def test_run_ignores_host_argv(monkeypatch, demo, tmp_path):
    import yolov5.train
    calls = _recording_train(monkeypatch, yolov5.train)
    monkeypatch.setattr(sys, "argv", ["host-program", "--epochs", "7", "--batch-size", "3"])
    yolov5.train.run(data=str(demo["det_yaml"]), cfg=str(DET_CFG), weights="", device="cpu", project=str(tmp_path))
    opt = calls[0][0]
    assert (opt.epochs, opt.batch_size) == (100, 16)  # YOLOv5's defaults, not the host's flags


# shim_noval_map50s: tests/yolov5/test_resume.py trains 2 epochs with --noval, which crashes without it


def test_shims_are_idempotent(monkeypatch):
    """Running the steps again changes nothing more (the journal `yolov5-dattn changes` prints stays as it is)."""
    import subprocess
    import yolov5.utils.general as general
    from yolov5_dattn import patching
    before = len(patching.changes())
    compat.apply()
    compat.apply_entrypoints()
    policy.shim_no_pip_installs()
    assert len(patching.changes()) == before
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: pytest.fail("pip was run"))
    assert general.check_requirements(("surely-not-installed-package>=99",)) is True


def test_validation_nms_has_no_time_limit_detect_keeps_it(monkeypatch):
    """A slow machine must not change validation's boxes: with a clock that jumps 10 s per reading, YOLOv5's NMS
    gives up after the first image, validation's copy keeps every image."""
    import torch
    from yolov5 import detect, val
    from yolov5.segment import val as seg_val
    from yolov5.utils import general

    compat.apply_entrypoints()
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(general.time, "time", lambda: float(next(clock)))
    torch.manual_seed(0)
    preds = torch.rand(4, 50, 5 + 3)  # 4 images, 50 candidates, 3 classes
    preds[..., :2] *= 100
    preds[..., 2:4] = 10
    preds[..., 4] = 0.9
    timed = detect.non_max_suppression(preds.clone(), conf_thres=0.1)
    assert [len(d) for d in timed][1:] == [0, 0, 0] and len(timed[0]) > 0
    for validation in (val, seg_val):
        untimed = validation.non_max_suppression(preds.clone(), conf_thres=0.1)
        assert all(len(d) > 0 for d in untimed) and torch.equal(untimed[0], timed[0])
