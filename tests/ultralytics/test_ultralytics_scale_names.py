"""A model YAML whose name carries the scale builds at that scale from any folder.

ultralytics drops the scale letter (`yolo11n-c3k2-dattn.yaml` -> `yolo11-c3k2-dattn.yaml`) with a regex run on the
whole path, so a folder holding a digit followed by n/s/m/l/x (`tmp.ab3mcd`, `proj2s`, `v5m`) is mangled and the
file is not found. `yolov5_dattn.hosts.ultralytics.scale_from_name` runs it on the file name only. Checked here for a
shipped config and a user's YAML, through `YOLO(path)` after the import and through `yolov5-dattn yolo train`
(also with the shipped configs themselves in such a folder, as in a clone there), with stock ultralytics failing
for the same folders as the control."""
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import yolov5_dattn.hosts.ultralytics  # noqa: F401  (the plugin, as a user imports it)
from conftest import NETGUARD, REPO, U_TRAIN, ok, yolo
from yolov5_dattn.hosts.ultralytics import baseline

FOLDERS = ["tmp.ab3mcd", "proj2s", "v5m"]  # each: a digit, then a scale letter
SHIPPED = REPO / "yolov5_dattn" / "configs" / "ultralytics" / "yolo11-c3k2-dattn.yaml"
# (file on disk, name asked for, its scale, nc written in it): our shipped config, and a user's YAML of its own
CASES = {"shipped": ("yolo11-c3k2-dattn.yaml", "yolo11n-c3k2-dattn.yaml", "n", None),
         "user": ("yolo11-mine.yaml", "yolo11s-mine.yaml", "s", 5)}


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def place(folder: Path, case: str) -> Path:
    """The case's scale-less YAML written into `folder`; returns the scaled name asked for, beside it."""
    file, asked, _, nc = CASES[case]
    folder.mkdir(parents=True, exist_ok=True)
    text = SHIPPED.read_text()
    assert "nc: 80" in text
    (folder / file).write_text(text if nc is None else text.replace("nc: 80", f"nc: {nc}"))
    return folder / asked


@functools.lru_cache(maxsize=None)
def reference(case: str, scale: str, nc=None) -> int:
    """Parameters of the case's YAML built from a dict at `scale` (no path, no name involved)."""
    from ultralytics.nn.tasks import DetectionModel
    d = yaml.safe_load(SHIPPED.read_text())
    d["scale"] = scale
    return params(DetectionModel(d, nc=nc or CASES[case][3] or d["nc"], verbose=False))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("folder", FOLDERS)
def test_yolo_builds_the_named_scale_from_the_folder(tmp_path, folder, case):
    from ultralytics import YOLO
    asked = place(tmp_path / folder, case)
    scale = CASES[case][2]
    model = YOLO(str(asked)).model
    assert model.yaml["scale"] == scale and model.yaml["yaml_file"] == str(asked)
    assert params(model) == reference(case, scale)
    assert params(model) != reference(case, "s" if scale == "n" else "n")  # the count tells the scales apart


def test_without_the_repair_the_same_build_fails(tmp_path, monkeypatch):
    """The control, in this process: with the change undone, ultralytics looks in a mangled folder. (Paths relative
    to tmp_path here, so that only the folder named here can be mangled, whatever pytest's own folders are called.)"""
    from ultralytics import YOLO

    from yolov5_dattn import patching
    from yolov5_dattn.hosts.ultralytics import scale_from_name
    place(tmp_path / "tmp.ab3mcd", "shipped")
    monkeypatch.chdir(tmp_path)
    asked = "tmp.ab3mcd/yolo11n-c3k2-dattn.yaml"
    assert patching.undo(where=lambda change: change.why == scale_from_name.WHY) == 1
    try:
        with pytest.raises(FileNotFoundError, match="^'tmp.ab3cd/yolo11n-c3k2-dattn.yaml' does not exist"):
            YOLO(asked)
    finally:
        assert scale_from_name.apply()
    assert params(YOLO(asked).model) == reference("shipped", "n")


STOCK = """
import json, sys
from ultralytics import YOLO
out = {}
for path in sys.argv[1:]:
    try:
        out[path] = sum(p.numel() for p in YOLO(path).model.parameters())
    except FileNotFoundError as e:
        out[path] = str(e)
print(json.dumps(out))
"""


def test_stock_ultralytics_fails_for_those_folders(tmp_path):
    """The control, in a fresh process without the plugin: ultralytics' own yolo11.yaml, asked for as yolo11n.yaml,
    is not found in those folders, and builds from a folder without such a pair. (Paths relative to tmp_path, so
    that only the folders named here can be mangled, whatever pytest's own folders are called.)"""
    from ultralytics import YOLO
    stock = baseline.models_dir() / "11" / "yolo11.yaml"
    asked = []
    for folder in FOLDERS + ["plain"]:
        (tmp_path / folder).mkdir()
        shutil.copy(stock, tmp_path / folder / "yolo11.yaml")
        asked.append(f"{folder}/yolo11n.yaml")
    run = subprocess.run([sys.executable, "-c", STOCK, *asked], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "yolov5_dattn" not in run.stdout + run.stderr
    built = json.loads(run.stdout.strip().splitlines()[-1])
    assert [built[path] for path in asked[:-1]] == [
        "'tmp.ab3cd/yolo11n.yaml' does not exist", "'proj2/yolo11n.yaml' does not exist",
        "'v5/yolo11n.yaml' does not exist"]
    assert built[asked[-1]] == params(YOLO("yolo11n.yaml").model)  # ultralytics' own scale-n build
    # with the plugin, here, the same files build at scale n
    assert all(params(YOLO(str(tmp_path / path)).model) == built[asked[-1]] for path in asked[:-1])


def last_params(run: Path) -> int:
    return params(baseline.load_checkpoint(run / "weights" / "last.pt"))


def test_cli_trains_the_named_scale_from_such_folders(udata, tmp_path):
    """`yolov5-dattn yolo train` (1 epoch, 64 px) of a shipped config and of a user's YAML, each asked for by its
    scaled name in such a folder; and of a shipped config by name alone, with our package itself in such a folder
    (as in a clone there): each run's weights hold the model at the named scale."""
    nc = len(yaml.safe_load(Path(udata["det_yaml"]).read_text())["names"])
    train = ["train", f"data={udata['det_yaml']}", *U_TRAIN, "name=run"]
    for folder, case in (("tmp.ab3mcd", "shipped"), ("proj2s", "user")):
        work = tmp_path / folder
        asked = place(work, case)
        ok(yolo(*train, f"model={asked}", f"project={work / 'runs'}", cwd=work, log=work / "net.log"),
           work / "net.log")
        assert last_params(work / "runs" / "run") == reference(case, CASES[case][2], nc), case

    # the shipped name resolved to the configs of a copy of our package that sits in v5m/
    work = tmp_path / "v5m"
    shutil.copytree(REPO / "yolov5_dattn", work / "yolov5_dattn", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(work)]), "NETGUARD_LOG": str(work / "l")}
    run = subprocess.run([sys.executable, "-c", "import sys, yolov5_dattn.cli as c; print('package', c.__file__); "
                          "sys.argv[0] = 'yolov5-dattn'; sys.exit(c.main())", "yolo", *train,
                          "model=yolo11n-c3k2-dattn.yaml", f"project={work / 'runs'}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    out = ok(run, work / "l")
    assert f"package {work / 'yolov5_dattn' / 'cli' / '__init__.py'}" in out  # the copy ran, not the checkout
    assert last_params(work / "runs" / "run") == reference("shipped", "n", nc)
