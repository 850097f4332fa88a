"""Every bad input to `yolov5-dattn yolo` is one `error:` line, exit 2, before any work, and leaves nothing behind.

The ultralytics counterpart of tests/yolov5/test_bad_inputs.py. Each case of TABLE runs the command in this process (the
entry point with capsys) and asserts: exit status 2, exactly one stderr line starting with `error:` (the last one,
naming ultralytics' key and holding the expected words), no traceback, no run folder under project=, and no new
file beside the inputs (ultralytics' label caches excepted). A few run in a fresh Python to show that nothing else
reaches the terminal. The controls show the checks refuse only what cannot work: imgsz=32 still predicts, a good
data YAML still trains.
"""
import ast
import csv
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import IMGSZ, yolo
import yolov5_dattn.hosts.ultralytics as host  # noqa: I001  first: the blocks, then our commands' policy
from yolov5_dattn.hosts.ultralytics import input_checks
from yolov5_dattn.hosts.ultralytics.input_checks import InputError

MODEL_YAML = "yolo11n-c3k2-dattn.yaml"
FAST = ["device=cpu", "workers=0", "plots=False"]
TRAIN = ["epochs=1", "batch=4", f"imgsz={IMGSZ}", *FAST]
NAMES = {0: "circle", 1: "square", 2: "triangle"}


@pytest.fixture(autouse=True, scope="module")
def policy():
    """Our commands' policy, which `yolov5-dattn yolo` runs under; the Python API opts in with the same call."""
    host.use_policy()


def main(argv) -> int:
    """`yolov5-dattn yolo argv...` in this process; its exit status."""
    from yolov5_dattn.cli.yolo import main as yolo_main
    return yolo_main([str(a) for a in argv])


def _data_yaml(root: Path, name: str, **content) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def _dataset_copy(root: Path, udata: dict, name: str, label=None, junk_images=None) -> Path:
    """A copy of the demo detection data whose labels are replaced by `label` and/or one split's images by junk;
    returns its data YAML."""
    folder = root / name
    shutil.copytree(udata["root"] / "det", folder, ignore=shutil.ignore_patterns("*.cache"))
    if label is not None:
        for split in ("train", "val"):
            for f in (folder / "labels" / split).glob("*.txt"):
                f.write_text(label)
    if junk_images:
        for f in (folder / "images" / junk_images).iterdir():
            f.write_bytes(b"not an image at all")
    return _data_yaml(root, name, path=str(folder), train="images/train", val="images/val", names=NAMES)


def _tiny_onnx(path: Path) -> Path:
    """A valid ONNX file (one Identity node): ultralytics loads it as an exported model."""
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, IMGSZ, IMGSZ])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, IMGSZ, IMGSZ])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture(scope="module")
def trained(udata, tmp_path_factory) -> Path:
    """The control: a good data YAML trains `yolov5-dattn yolo train` 1 epoch at imgsz 64 (in this process);
    returns its run folder."""
    project = tmp_path_factory.mktemp("uctl")
    rc = main(["train", f"model={MODEL_YAML}", f"data={udata['det_yaml']}", *TRAIN, f"project={project}", "name=det"])
    assert rc == 0
    return project / "det"


@pytest.fixture(scope="module")
def files(trained, udata, tmp_path_factory) -> SimpleNamespace:
    """The bad inputs, made once, beside a copy of the control's checkpoint."""
    root = tmp_path_factory.mktemp("ubad")
    pt = root / "best.pt"
    shutil.copy(trained / "weights" / "best.pt", pt)
    det = udata["root"] / "det"
    f = SimpleNamespace(root=root, pt=pt, data=udata["det_yaml"], images=udata["val_images"], video=udata["video"])
    for name, text in (("text.pt", "hello"), ("empty.pt", ""), ("notes.txt", "x\n"),
                       ("broken.yaml", "train: [images\n"), ("empty.yaml", ""), ("list.yaml", "- a\n- b\n"),
                       ("text.onnx", "hello"), ("a_file", "a file"), ("junk.jpg", "not a jpeg")):
        (root / name).write_text(text)
    (root / "truncated.pt").write_bytes(pt.read_bytes()[:4096])  # a torch archive cut short
    (root / "folder").mkdir()
    (root / "zero.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    (root / "list_missing.txt").write_text(f"{udata['val_images']}\n{root / 'nowhere.jpg'}\n")
    (root / "empty_split").mkdir()
    f.onnx = _tiny_onnx(root / "tiny.onnx")
    common = {"path": str(det), "names": NAMES}
    f.no_names = _data_yaml(root, "no_names", path=str(det), train="images/train", val="images/val")
    f.no_val = _data_yaml(root, "no_val", path=str(det), train="images/train", names=NAMES)
    f.no_val_folder = _data_yaml(root, "no_val_folder", **common, train="images/train", val="images/nope")
    f.no_train_folder = _data_yaml(root, "no_train_folder", **common, train="images/nope", val="images/val")
    f.empty_train = _data_yaml(root, "empty_train", **common, train=str(root / "empty_split"), val="images/val")
    f.nc_mismatch = _data_yaml(root, "nc_mismatch", **common, train="images/train", val="images/val", nc=5)
    f.names_text = _data_yaml(root, "names_text", path=str(det), train="images/train", val="images/val",
                              names="circle square")
    f.out_of_range = _dataset_copy(root, udata, "out_of_range", label="7 0.5 0.5 0.2 0.2\n")
    f.junk_train = _dataset_copy(root, udata, "junk_train", junk_images="train")
    return f


# (id, argv from `files`, words the error line holds); project=<tmp>/runs is added to every mode but export
TABLE = [
    # the table
    ("data-missing-file", lambda f: ["train", f"model={f.pt}", f"data={f.root / 'nope.yaml'}", *TRAIN],
     "data=", "no such file"),
    ("data-coco8-offline-train", lambda f: ["train", f"model={f.pt}", "data=coco8.yaml", *TRAIN],
     "data=coco8.yaml", "not on disk"),
    ("data-coco8-offline-val", lambda f: ["val", f"model={f.pt}", "data=coco8.yaml", *FAST],
     "data=coco8.yaml", "does not download"),
    ("data-no-names", lambda f: ["train", f"model={f.pt}", f"data={f.no_names}", *TRAIN], "data=", "has no names:"),
    ("imgsz-0-train", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "imgsz=0"],
     "imgsz=0", "must be positive"),
    ("imgsz-neg-predict", lambda f: ["predict", f"model={f.pt}", f"source={f.images}", *FAST, "imgsz=-32"],
     "imgsz=-32", "must be positive"),
    ("epochs-abc", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "epochs=abc"], "epochs=abc", "int"),
    ("text-pt-predict", lambda f: ["predict", f"model={f.root / 'text.pt'}", f"source={f.images}", *FAST],
     "model=", "not a PyTorch checkpoint"),
    # numbers, device, names ultralytics refuses only inside the run
    ("imgsz-0-val", lambda f: ["val", f"model={f.pt}", f"data={f.data}", *FAST, "imgsz=0"], "imgsz=0", "positive"),
    ("imgsz-0-export", lambda f: ["export", f"model={f.pt}", "format=onnx", "imgsz=0"], "imgsz=0", "positive"),
    ("imgsz-text", lambda f: ["predict", f"model={f.pt}", f"source={f.images}", *FAST, "imgsz=big"],
     "imgsz=big", "is not an image size"),
    ("imgsz-three-values", lambda f: ["predict", f"model={f.pt}", f"source={f.images}", *FAST, "imgsz=[64,64,64]"],
     "imgsz=", "has 3 values"),
    ("epochs-0", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "epochs=0"], "epochs=0", "invalid"),
    ("batch-0-train", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "batch=0"],
     "batch=0", "at least 1"),
    ("batch-neg-val", lambda f: ["val", f"model={f.pt}", f"data={f.data}", *FAST, "batch=-1"],
     "batch=-1", "at least 1"),
    ("workers-neg", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "workers=-1"],
     "workers=-1", "0 or more"),
    ("lr0-above-1", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "lr0=2"], "lr0=2", "0.0"),
    ("device-text", lambda f: ["predict", f"model={f.pt}", f"source={f.images}", *FAST, "device=gpu"],
     "device=gpu", "is not a device"),
    ("device-absent-gpu", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "device=9"],
     "device=9", "no CUDA device 9"),
    ("optimizer-unknown", lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, "optimizer=Adamm"],
     "optimizer=Adamm", "use one of"),
    ("format-unknown", lambda f: ["export", f"model={f.pt}", "format=onnxx"], "format=onnxx", "use one of"),
    ("project-under-a-file",
     lambda f: ["train", f"model={f.pt}", f"data={f.data}", *TRAIN, f"project={f.root / 'a_file' / 'runs'}"],
     "project=", "is a file, not a folder"),
    # data=
    ("data-broken-yaml", lambda f: ["train", f"model={f.pt}", f"data={f.root / 'broken.yaml'}", *TRAIN],
     "data=", "is not valid YAML (line 2)"),
    ("data-empty-yaml", lambda f: ["val", f"model={f.pt}", f"data={f.root / 'empty.yaml'}", *FAST],
     "data=", "is empty"),
    ("data-list-yaml", lambda f: ["val", f"model={f.pt}", f"data={f.root / 'list.yaml'}", *FAST],
     "data=", "a list, not a mapping"),
    ("data-not-yaml", lambda f: ["train", f"model={f.pt}", f"data={f.root / 'notes.txt'}", *TRAIN],
     "data=", "is not a dataset YAML"),
    ("data-url", lambda f: ["train", f"model={f.pt}", "data=https://example.com/shapes.zip", *TRAIN],
     "data=https://example.com/shapes.zip", "does not download"),
    ("data-no-val-key", lambda f: ["train", f"model={f.pt}", f"data={f.no_val}", *TRAIN], "data=", "has no val: key"),
    ("data-val-folder-missing", lambda f: ["train", f"model={f.pt}", f"data={f.no_val_folder}", *TRAIN],
     "data=", "no folder "),
    ("data-train-folder-missing", lambda f: ["train", f"model={f.pt}", f"data={f.no_train_folder}", *TRAIN],
     "data=", "train images not found: no folder "),
    ("data-train-folder-empty", lambda f: ["train", f"model={f.pt}", f"data={f.empty_train}", *TRAIN],
     "data=", "no images in "),
    ("data-nc-mismatch", lambda f: ["train", f"model={f.pt}", f"data={f.nc_mismatch}", *TRAIN],
     "data=", "names has 3 classes but nc: 5"),
    ("data-names-text", lambda f: ["train", f"model={f.pt}", f"data={f.names_text}", *TRAIN],
     "data=", "its names: is a str"),
    ("data-split-missing", lambda f: ["val", f"model={f.pt}", f"data={f.data}", *FAST, "split=test"],
     "data=", "has no test: key"),
    ("labels-out-of-range", lambda f: ["train", f"model={f.pt}", f"data={f.out_of_range}", *TRAIN],
     "data=", "Label class 7 exceeds dataset class count 3"),
    ("junk-train-images", lambda f: ["train", f"model={f.pt}", f"data={f.junk_train}", *TRAIN],
     "data=", "none of the train images"),
    # model=
    ("text-pt-export", lambda f: ["export", f"model={f.root / 'text.pt'}", "format=onnx"],
     "model=", "not a PyTorch checkpoint"),
    ("empty-pt-val", lambda f: ["val", f"model={f.root / 'empty.pt'}", f"data={f.data}", *FAST], "model=", "is empty"),
    ("truncated-pt", lambda f: ["predict", f"model={f.root / 'truncated.pt'}", f"source={f.images}", *FAST],
     "model=", "is a damaged torch archive"),
    ("asset-weights-offline", lambda f: ["predict", "model=yolo11n.pt", f"source={f.images}", *FAST],
     "model=yolo11n.pt", "does not download"),
    ("model-folder", lambda f: ["predict", f"model={f.root / 'folder'}", f"source={f.images}", *FAST],
     "model=", "is a folder"),
    ("model-unknown-suffix", lambda f: ["predict", f"model={f.root / 'notes.txt'}", f"source={f.images}", *FAST],
     "model=", "is not a model format"),
    ("model-data-yaml", lambda f: ["train", f"model={f.data}", f"data={f.data}", *TRAIN], "model=", "backbone"),
    ("text-onnx-val", lambda f: ["val", f"model={f.root / 'text.onnx'}", f"data={f.data}", *FAST],
     "model=", "is not a valid ONNX model"),
    ("export-of-onnx", lambda f: ["export", f"model={f.onnx}", "format=onnx"], "model=", "needs a PyTorch model"),
    ("train-from-onnx", lambda f: ["train", f"model={f.onnx}", f"data={f.data}", *TRAIN],
     "model=", "needs a PyTorch model"),
    # source=
    ("source-missing", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'nowhere'}", *FAST],
     "source=", "no such file or folder"),
    ("source-empty-folder", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'folder'}", *FAST],
     "source=", "has no images or videos"),
    ("source-glob-no-match", lambda f: ["predict", f"model={f.pt}", f"source={f.root / '*.nothing'}", *FAST],
     "source=", "has no images or videos"),
    ("source-junk-image", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'junk.jpg'}", *FAST],
     "source=", "cannot be read as an image"),
    ("source-junk-video", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'junk.mp4'}", *FAST],
     "source=", "junk.mp4 cannot be read"),
    ("source-zero-video", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'zero.mp4'}", *FAST],
     "source=", "zero.mp4 cannot be read"),
    ("source-list-missing", lambda f: ["predict", f"model={f.pt}", f"source={f.root / 'list_missing.txt'}", *FAST],
     "source=", "nowhere.jpg in this list does not exist"),
]


def _tree(*roots: Path) -> set:
    """Every path under `roots`, except ultralytics' label caches."""
    return {p for r in roots if r.exists() for p in r.rglob("*") if p.suffix != ".cache"}


def assert_one_error(rc: int, err: str, key: str, words: str) -> str:
    """rc 2; the last stderr line is the only `error:` line, names `key` and holds `words`; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert rc == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert key in errors[0] and words in errors[0], errors[0]
    return errors[0]


def test_the_table_is_at_least_as_long_as_the_yolov5_one():
    """Counted from the source: importing tests/yolov5/test_bad_inputs.py would install the YOLOv5 host here."""
    tree = ast.parse((Path(__file__).parents[1] / "yolov5" / "test_bad_inputs.py").read_text())
    yolov5_table = next(node.value for node in tree.body if isinstance(node, ast.Assign) and
                        any(getattr(t, "id", None) == "TABLE" for t in node.targets))
    assert len(TABLE) >= len(yolov5_table.elts) >= 30


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_bad_input_is_one_error_line_and_leaves_no_run_folder(case, files, udata, tmp_path, capsys):
    _, args, key, words = case
    project = tmp_path / "runs"
    argv = [str(a) for a in args(files)]
    if argv[0] != "export" and not any(a.startswith("project=") for a in argv):
        argv.append(f"project={project}")
    before = _tree(files.root, udata["root"], tmp_path)
    capsys.readouterr()
    rc = main(argv)
    assert_one_error(rc, capsys.readouterr().err, key, words)
    assert not project.exists()
    assert _tree(files.root, udata["root"], tmp_path) == before


@pytest.mark.parametrize("args,key,words", [
    (lambda f, d: ["train", f"model={MODEL_YAML}", f"data={f.root / 'nope.yaml'}", *TRAIN], "data=", "no such file"),
    (lambda f, d: ["train", f"model={f.pt}", "data=coco8.yaml", *TRAIN], "data=coco8.yaml", "not on disk"),
    (lambda f, d: ["predict", f"model={f.root / 'text.pt'}", f"source={d['val_images']}", *FAST],
     "model=", "not a PyTorch checkpoint"),
], ids=["missing-data-yaml-model", "coco8-offline", "text-pt"])
def test_real_process_prints_only_the_error(args, key, words, files, udata, tmp_path):
    """In a fresh Python (where ultralytics' log lines reach the terminal), the error line is all of stderr."""
    project = tmp_path / "runs"
    r = yolo(*args(files, udata), f"project={project}", cwd=tmp_path, log=tmp_path / "net.log")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert_one_error(r.returncode, r.stderr, key, words)
    assert "Traceback" not in r.stdout
    assert not project.exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "net.log").exists()


def test_coco8_names_the_folder_ultralytics_looked_in(files, tmp_path, capsys):
    from ultralytics.utils import DATASETS_DIR
    rc = main(["val", f"model={files.pt}", "data=coco8.yaml", *FAST, f"project={tmp_path / 'runs'}"])
    line = assert_one_error(rc, capsys.readouterr().err, "data=coco8.yaml", "this command does not download")
    assert str(Path(DATASETS_DIR) / "coco8" / "images" / "val") in line


def test_missing_dataset_names_the_missing_folder(files, tmp_path, capsys):
    rc = main(["train", f"model={files.pt}", f"data={files.no_train_folder}", *TRAIN, f"project={tmp_path / 'runs'}"])
    line = assert_one_error(rc, capsys.readouterr().err, "data=", "not found")
    assert str(Path(files.data).parent / "det" / "images" / "nope") in line


# ---- the Python API gets the same checks -----------------------------------------------------------------------
def test_python_api_refuses_before_the_run_folder(files, tmp_path):
    from ultralytics import YOLO
    model = YOLO(str(files.pt))
    with pytest.raises(InputError, match=r"^data=.*nope\.yaml: no such file"):
        model.train(data=str(files.root / "nope.yaml"), epochs=1, imgsz=IMGSZ, device="cpu", project=str(tmp_path))
    with pytest.raises(InputError, match=r"^imgsz=0 must be positive"):
        model.val(data=str(files.data), imgsz=0, device="cpu", project=str(tmp_path))
    with pytest.raises(InputError, match=r"^source=.*junk\.mp4: video .* cannot be read"):
        model.predict(str(files.root / "junk.mp4"), save=True, project=str(tmp_path))
    with pytest.raises(InputError, match=r"^model=.*text\.pt is not a PyTorch checkpoint"):
        YOLO(str(files.root / "text.pt"))
    assert list(tmp_path.iterdir()) == []


def test_python_api_predict_without_saving_ignores_project(files, tmp_path):
    """predict() of the Python API writes nothing unless asked: a project under a file does not matter then."""
    from ultralytics import YOLO
    results = YOLO(str(files.pt)).predict(str(files.images), imgsz=IMGSZ, project=str(files.root / "a_file" / "x"))
    assert len(results) == len(list(files.images.iterdir()))


# ---- the controls: valid boundaries still run ---------------------------------------------------------------------
def test_a_good_data_yaml_trains_one_epoch_at_64(trained):
    args = yaml.safe_load((trained / "args.yaml").read_text())
    assert args["imgsz"] == IMGSZ and args["epochs"] == 1
    assert (trained / "weights" / "best.pt").stat().st_size > 100_000
    with open(trained / "results.csv") as fh:
        assert [int(float(row["epoch"])) for row in csv.DictReader(fh)] == [1]


def test_imgsz_32_still_predicts(files, tmp_path, capsys):
    project = tmp_path / "runs"
    rc = main(["predict", f"model={files.pt}", f"source={files.images}", "imgsz=32", *FAST, f"project={project}",
               "name=p"])
    assert rc == 0, capsys.readouterr().err
    saved = sorted(p.stem for p in (project / "p").iterdir() if p.suffix == ".jpg")
    assert saved == sorted(p.stem for p in files.images.iterdir())


@pytest.mark.parametrize("cfg,mode", [
    ({"imgsz": 32, "batch": -1, "workers": 0}, "train"),  # AutoBatch
    ({"imgsz": 64, "batch": 0.7, "workers": 8}, "train"),  # a fraction of GPU memory
    ({"imgsz": [64, 96], "batch": 1}, "predict"),
    ({"imgsz": "640", "batch": 16}, "val"),
    ({"imgsz": 1, "batch": 1}, "export"),  # ultralytics rounds it up to the stride
])
def test_valid_numbers_pass(cfg, mode):
    input_checks.check_numbers(cfg, mode)


@pytest.mark.parametrize("device", [None, "", "cpu", "CPU", "mps", "-1"])
def test_valid_devices_pass(device):
    input_checks.check_device(device)


def test_valid_inputs_pass_every_check(files, udata, tmp_path):
    input_checks.check_data(str(files.data), "detect", ["train", "val"])
    input_checks.check_data(str(files.data), "segment", ["val"])
    input_checks.check_source(str(files.images))
    input_checks.check_source(str(files.video))
    input_checks.check_source(str(files.images / "*.png"))
    input_checks.check_model_file(str(files.pt))
    input_checks.check_model_file(str(files.onnx))
    input_checks.check_model_yaml(str(Path(input_checks.__file__).parents[2] / "configs" / "ultralytics" /
                                      "yolo11-c3k2-dattn.yaml"))
    input_checks.check_format("onnx")
    input_checks.check_format("TFLite")  # ultralytics' old name for litert, which its Exporter still takes
    assert input_checks.canonical_format("TFLite") == "litert" and input_checks.canonical_format("trt") == "engine"
    input_checks.check_optimizer("AdamW")
    input_checks.check_project({"project": str(tmp_path / "new" / "deep"), "name": "x"})
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match=r"^data=.*no_names\.yaml has no names"):
        input_checks.check_data(str(files.no_names), "detect", ["val"])
