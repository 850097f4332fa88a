"""The git-clone patch: applied to a clone-shaped YOLOv5 tree, the clone's own Model builds C3_DAttention.

A real clone cannot be downloaded offline, so the tree is made from the installed pip package (the
same code as tag v7.0 plus fixes) with its `yolov5.`-qualified imports rewritten to the clone's
top-level form (`from models.common import ...`).
"""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "patches" / "yolov5-v7.0-clone.patch"
CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"

# files that only the pip package has (its CLI wrapper and the package marker; its train.py does need
# helpers.py, so that one stays)
PIP_ONLY = {"__init__.py", "cli.py"}
QUALIFIED_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)yolov5\.", re.MULTILINE)

# Run inside the clone. Our package is imported first: it must not hijack the clone's `models`, and
# its compat layer supplies `pkg_resources`, which the clone's utils/general.py (like the pip
# package's) imports and today's setuptools no longer has. The model must come from the clone's
# own parse_model.
PROBE = r"""
import json, sys, torch
import yolov5_dattn
from models.yolo import Model
import models.yolo as yolo
model = Model(sys.argv[1], ch=3, nc=3).eval()
x = torch.rand(1, 3, 64, 64)
with torch.no_grad():
    y = model(x)[0]
    fused = model.fuse()(x)[0]
print(json.dumps({
    "yolo_file": yolo.__file__,
    "model_class_module": type(model).__module__,
    "hooked": bool(getattr(yolo.parse_model, "_yolov5_dattn", False)),
    "layer8": type(model.model[8]).__name__,
    "out_shape": list(y.shape),
    "fuse_max_diff": float((y - fused).abs().max()),
}))
"""


def make_clone_tree(dst: Path) -> Path:
    """Copy the installed yolov5 package to `dst` in the layout of a git clone (imports rewritten)."""
    # found, not imported: importing yolov5 needs the compat layer of our package
    src = Path(importlib.util.find_spec("yolov5").submodule_search_locations[0])
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", *PIP_ONLY))
    for py in dst.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        py.write_text(QUALIFIED_IMPORT.sub(r"\1", text), encoding="utf-8")
    # the pip-only module files live at the root only; restore package markers deeper down
    for init in src.rglob("__init__.py"):
        rel = init.relative_to(src)
        if rel.parent != Path("."):
            target = dst / rel
            target.write_text(QUALIFIED_IMPORT.sub(r"\1", init.read_text(encoding="utf-8")), encoding="utf-8")
    return dst


def git(clone: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=clone, capture_output=True, text=True)


def probe(clone: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, str(CFG)], cwd=clone, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the clone patch")
    root = make_clone_tree(tmp_path_factory.mktemp("yolov5-clone") / "yolov5")
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone"]):
        assert git(root, *args).returncode == 0
    return root


def test_clone_tree_has_no_pip_qualified_imports(clone):
    assert (clone / "models" / "yolo.py").is_file() and (clone / "train.py").is_file()
    assert not (clone / "__init__.py").exists()
    offenders = [str(p) for p in clone.rglob("*.py") if QUALIFIED_IMPORT.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert "from models.common import *" in (clone / "models" / "yolo.py").read_text()


def test_patch_makes_clone_build_c3_dattention(clone):
    assert "yolov5_dattn" not in (clone / "models" / "yolo.py").read_text()
    check = git(clone, "apply", "--check", str(PATCH))
    assert check.returncode == 0, check.stderr
    applied = git(clone, "apply", str(PATCH))
    assert applied.returncode == 0, applied.stderr
    assert "yolov5_dattn.register(sys.modules[__name__])" in (clone / "models" / "yolo.py").read_text()
    assert git(clone, "diff", "--stat").stdout.count("|") == 1  # only models/yolo.py changed

    after = probe(clone)
    assert after.returncode == 0, after.stderr[-3000:]
    result = json.loads(after.stdout.strip().splitlines()[-1])
    assert Path(result["yolo_file"]).resolve() == (clone / "models" / "yolo.py").resolve()
    assert result["model_class_module"] == "models.yolo"  # the clone's class, not yolov5.models.yolo
    assert result["hooked"] is True
    assert result["layer8"] == "C3_DAttention"
    assert result["out_shape"] == [1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 3 + 5]  # 64 px: 3 anchors on P3..P5 grids
    assert result["fuse_max_diff"] < 1e-4

    # and the patch reverses cleanly
    assert git(clone, "apply", "-R", "--check", str(PATCH)).returncode == 0
