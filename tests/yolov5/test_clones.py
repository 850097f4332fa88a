"""Real git clones of ultralytics/yolov5 (tag v7.0 and master 5081342f, `git archive` snapshots in
../shared/yolov5-clones): `yolov5-dattn clone-setup`, then the clone's own train.py -> detect.py (images, video)
-> val.py -> export.py (ONNX), offline; the pip scripts' checks run in the clone's scripts too (a fixed_pe size
that cannot fit, a checkpoint that would run code, an opset without grid_sample: one line, exit 2, nothing
written); `--undo` restores every byte."""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import onnx
import pytest
import torch
import yaml

from conftest import DET_CFG, IMGSZ, NETGUARD, REPO

from yolov5_dattn.hosts.yolov5 import clone as clone_setup
from yolov5_dattn.errors import UserError

SNAPSHOTS = REPO.parent / "shared" / "yolov5-clones"
# layout -> (snapshot, extra environment). master's scripts import ultralytics before the clone's packages
# (so before the hook), and ultralytics probes DNS at import unless YOLO_OFFLINE is set (README says so)
CLONES = {
    "v7.0": ("yolov5-v7.0.tar.gz", {}),
    "master": ("yolov5-master-5081342f.tar.gz", {"YOLO_OFFLINE": "1"}),
}
FLAGS = ["--imgsz", str(IMGSZ), "--device", "cpu"]


def tree_digest(root: Path) -> dict:
    """{relative path: sha256} of every file under `root` (what undo must restore exactly)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def run_in_clone(clone: Path, env_extra: dict, log: Path, *args) -> subprocess.CompletedProcess:
    """`python <args>` in the clone, internet sockets blocked and logged to `log` (tests/netguard)."""
    # YOLO_OFFLINE only where the layout needs it (this process has it: our package sets it for yolov5)
    env = {k: v for k, v in os.environ.items() if k != "YOLO_OFFLINE"}
    env.update(env_extra, NETGUARD_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *map(str, args)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module", params=list(CLONES))
def clone(request, tmp_path_factory):
    """(layout, clone folder, extra env, digest before setup) of a freshly unpacked, set-up snapshot."""
    snapshot, env_extra = CLONES[request.param]
    if not (SNAPSHOTS / snapshot).is_file():
        pytest.skip(f"{SNAPSHOTS / snapshot} not found: the real-clone tests need ../shared/yolov5-clones "
                    f"beside the checkout (CI has it)")
    root = tmp_path_factory.mktemp(f"clone-{request.param}") / "yolov5"
    root.mkdir()
    with tarfile.open(SNAPSHOTS / snapshot) as tar:
        tar.extractall(root, filter="data")
    before = tree_digest(root)
    setup = subprocess.run([sys.executable, "-m", "yolov5_dattn", "clone-setup", str(root)], capture_output=True,
                           text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.count("added the hook to") == 2
    return request.param, root, env_extra, before


def test_setup_adds_three_lines_to_two_files(clone):
    _, root, _, before = clone
    after = tree_digest(root)
    assert sorted(k for k in after if after[k] != before.get(k)) == sorted(clone_setup.HOOK_FILES)
    assert set(after) == set(before)  # nothing copied into the clone
    for name in clone_setup.HOOK_FILES:
        assert (root / name).read_text(encoding="utf-8").endswith(clone_setup.BLOCK)
    again = subprocess.run([sys.executable, "-m", "yolov5_dattn", "clone-setup", str(root)], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "set up already" in again.stdout
    assert tree_digest(root) == after


class Evil:
    """Unpickling this runs `touch <marker>`; a safe loader must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_clone_train_detect_val_offline(clone, demo, tmp_path):
    layout, root, env, _ = clone
    log = tmp_path / "net.log"
    project = tmp_path / "runs"
    train = run_in_clone(root, env, log, "train.py", "--cfg", DET_CFG, "--data", demo["det_yaml"], "--weights", "",
                         "--epochs", "1", "--batch-size", "4", "--workers", "0", *FLAGS, "--project", project,
                         "--name", "train")
    out = train.stdout + train.stderr
    assert train.returncode == 0, out[-4000:]
    assert "yolov5_dattn.hosts.yolov5.blocks.C3_DAttention" in out  # built by the clone's own parse_model
    # the summary counts at the run's size, attention included (YOLOv5's own would say 640 and miss it)
    assert f"GFLOPs at {IMGSZ}x{IMGSZ} (incl." in out and "GFLOPs of attention matmuls that thop misses" in out
    run = project / "train"
    assert (run / "weights" / "best.pt").stat().st_size > 0 and (run / "results.csv").is_file()
    assert (run / "train_batch0.jpg").stat().st_size > 0  # plots drew text with a local font
    best = run / "weights" / "best.pt"
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(best))  # read, not unpickled
    assert "models.yolo.DetectionModel" in names  # the clone's classes, not yolov5.models.yolo
    assert "yolov5_dattn.hosts.yolov5.blocks.C3_DAttention" in names

    # one detect run over a folder of images and a video (YOLOv5's LoadImages takes both kinds from one folder)
    source = tmp_path / "images-and-video"
    shutil.copytree(demo["val_images"], source)
    shutil.copy(demo["video"], source)
    det = run_in_clone(root, env, log, "detect.py", "--weights", best, "--source", source, *FLAGS,
                       "--project", project, "--name", "det")
    assert det.returncode == 0, (det.stdout + det.stderr)[-3000:]
    assert len(list((project / "det").glob("*.png"))) == 4
    assert (project / "det" / Path(demo["video"]).name).stat().st_size > 0
    val = run_in_clone(root, env, log, "val.py", "--weights", best, "--data", demo["det_yaml"], *FLAGS,
                       "--workers", "0", "--project", project, "--name", "val")
    assert val.returncode == 0, (val.stdout + val.stderr)[-3000:]
    assert (project / "val" / "confusion_matrix.png").is_file()

    # v7.0's export.py defaults to opset 12, which has no grid_sample: without --opset it must write 17
    export = run_in_clone(root, env, log, "export.py", "--weights", best, "--include", "onnx", *FLAGS)
    assert export.returncode == 0, (export.stdout + export.stderr)[-3000:]
    opsets = {o.domain: o.version for o in onnx.load(str(best.with_suffix(".onnx"))).opset_import}
    assert opsets[""] >= 16, opsets
    best.with_suffix(".onnx").unlink()
    low = run_in_clone(root, env, log, "export.py", "--weights", best, "--include", "onnx", "--opset", "12", *FLAGS)
    assert low.returncode == 2, (low.stdout + low.stderr)[-3000:]
    assert _error_lines(low) == ["error: --opset 12 cannot express grid_sample (used by DAttention): use --opset 16 "
                                 "or higher (default 17), or --sampler gather"]
    assert not best.with_suffix(".onnx").exists()

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker)}, evil)
    refused = run_in_clone(root, env, log, "detect.py", "--weights", evil, "--source", demo["val_images"], *FLAGS,
                           "--project", project, "--name", "evil")
    assert refused.returncode == 2, (refused.stdout + refused.stderr)[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint {evil}") and "Traceback" not in refused.stderr
    assert not marker.exists()

    assert not log.exists() or log.read_text() == "", log.read_text()  # no socket, no DNS lookup, ever


def _error_lines(result: subprocess.CompletedProcess) -> list:
    """The `error:` lines of a refused run's stderr; fails on a traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_clone_checks_run_before_the_script(clone, demo, tmp_path):
    """The pip scripts' pre-run checks in the clone's own train.py: a fixed_pe layer declared for --imgsz 64
    refuses --imgsz 128 (preflight), and a missing --data is named, before the run folder exists."""
    _, root, env, _ = clone
    log = tmp_path / "net.log"
    cfg = yaml.safe_load(DET_CFG.read_text())
    cfg["backbone"][8] = [-1, 1, "C3_DAttention", [1024, {"q_size": [2, 2], "fixed_pe": True, "dwc_pe": False}]]
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(cfg))
    project = tmp_path / "runs"
    common = ["--weights", "", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
              "--project", project, "--name", "train"]
    refused = run_in_clone(root, env, log, "train.py", "--cfg", fixed, "--data", demo["det_yaml"], "--imgsz", "128",
                           *common)
    assert refused.returncode == 2, (refused.stdout + refused.stderr)[-3000:]
    assert _error_lines(refused) == ["error: model.8.m.0.attention (fixed_pe) is declared for 2x2 (--imgsz 64) but "
                                     "--imgsz 128 gives 4x4: use --imgsz 64 or set q_size [4, 4] in the model "
                                     "YAML's fmapsize"]
    missing = run_in_clone(root, env, log, "train.py", "--cfg", fixed, "--data", tmp_path / "nowhere.yaml",
                           "--imgsz", "64", *common)
    assert missing.returncode == 2, (missing.stdout + missing.stderr)[-3000:]
    assert _error_lines(missing) == [f"error: --data {tmp_path / 'nowhere.yaml'} not found: pass the path of a "
                                     f"dataset YAML or a shipped name such as demo_shapes.yaml"]
    assert not project.exists()
    helped = run_in_clone(root, env, log, "detect.py", "--help")
    assert helped.returncode == 0 and "--trust-checkpoint" in helped.stdout  # our flag, in the clone's parser
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_undo_restores_every_byte(clone):
    _, root, _, before = clone
    undo = subprocess.run([sys.executable, "-m", "yolov5_dattn", "clone-setup", str(root), "--undo"],
                          capture_output=True, text=True, timeout=300)
    assert undo.returncode == 0, undo.stderr
    assert undo.stdout.count("removed the hook from") == 2
    assert tree_digest(root) == before


# ---- the file edits alone (no snapshot needed) --------------------------------------------------------------
def _fake_clone(root: Path, models_init: bytes, utils_init: bytes) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "train.py").write_text("")
    (root / "models" / "yolo.py").write_text("")
    (root / "models" / "__init__.py").write_bytes(models_init)
    (root / "utils" / "__init__.py").write_bytes(utils_init)
    return root


@pytest.mark.parametrize("content", [b"", b"# header\n", b"x = 1", b"a = 1\r\nb = 2\r\n"],
                         ids=["empty", "newline", "no-final-newline", "crlf"])
def test_setup_undo_round_trip(tmp_path, content):
    root = _fake_clone(tmp_path / "c", content, content)
    assert len(clone_setup.setup(root)) == 2
    text = (root / "models" / "__init__.py").read_bytes()
    assert text.startswith(content) and clone_setup.BEGIN.encode() in text
    compile(text, "models/__init__.py", "exec")  # still Python
    assert clone_setup.is_set_up(root) == {name: True for name in clone_setup.HOOK_FILES}
    assert clone_setup.setup(root) == []
    assert len(clone_setup.undo(root)) == 2
    assert (root / "models" / "__init__.py").read_bytes() == content
    assert (root / "utils" / "__init__.py").read_bytes() == content
    assert clone_setup.undo(root) == []


def test_setup_refuses_a_folder_that_is_no_clone(tmp_path, capsys):
    from yolov5_dattn.cli import main
    with pytest.raises(UserError, match=r"not a YOLOv5 clone \(no models/yolo.py"):
        clone_setup.setup(tmp_path)
    assert main(["clone-setup", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'nowhere'}: no such folder")


def test_undo_refuses_an_edited_hook(tmp_path):
    root = _fake_clone(tmp_path / "c", b"", b"")
    clone_setup.setup(root)
    hook = root / "utils" / "__init__.py"
    hook.write_text(hook.read_text().replace("install(__name__)", "install(__name__)  # mine"))
    with pytest.raises(UserError, match="edited"):
        clone_setup.undo(root)
