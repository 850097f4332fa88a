"""Every bad input of the hostile-user sweep is one `error:` line, exit 2, and leaves nothing behind.

Each case of TABLE runs a script's task in this process and asserts: exit status 2, exactly one stderr
line starting with `error:` (the last one, holding the expected words), no traceback, and no new file or
folder under the run's project folder or beside the files it was given (YOLOv5's label caches, written
beside a dataset's labels, are its own and are not counted). Fast cases (refused while parsing numbers
or weights) come first; those that scan a dataset or open videos and models later.
"""
import ast
import random
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import DET_CFG, IMGSZ, run_script, run_task
import yolov5_dattn  # noqa: F401,I001  first: applies the compat layer
from yolov5_dattn.hosts.yolov5 import checkpoints, input_checks

DEVICE = ["--device", "cpu"]
TRAIN = ["--imgsz", str(IMGSZ), "--batch-size", "4", "--device", "cpu", "--workers", "0", "--epochs", "1"]
NAMES = {0: "circle", 1: "square", 2: "triangle"}


def _dataset(root: Path, demo, name: str, label=None, corrupt_split=None) -> Path:
    """A copy of the demo detection data, its labels replaced by `label` and/or one split's images by junk."""
    folder = root / name
    shutil.copytree(demo["root"] / "det", folder)
    if label is not None:
        for f in (folder / "labels" / "val").glob("*.txt"):
            f.write_text(label)
    if corrupt_split:
        for f in (folder / "images" / corrupt_split).iterdir():
            f.write_bytes(b"not an image at all")
    data = root / f"{name}.yaml"
    data.write_text(yaml.safe_dump({"path": str(folder), "train": "images/train", "val": "images/val",
                                    "names": NAMES}))
    return data


def _model_yaml(root: Path, name: str, layer8_args) -> Path:
    cfg = yaml.safe_load(DET_CFG.read_text())
    cfg["backbone"][8][3] = layer8_args
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def files(trained_det, demo, tmp_path_factory) -> SimpleNamespace:
    """The bad inputs (made once), a real checkpoint, and an ONNX export of it at --imgsz 64."""
    root = tmp_path_factory.mktemp("bad")
    weights = root / "weights"
    weights.mkdir()
    pt = weights / "best.pt"
    shutil.copy(trained_det / "weights" / "best.pt", pt)
    assert run_task("export", "--weights", pt, "--include", "onnx", "--imgsz", IMGSZ, *DEVICE) == 0
    f = SimpleNamespace(root=root, pt=pt, onnx=pt.with_suffix(".onnx"), data=demo["det_yaml"],
                        images=demo["val_images"], video=demo["video"], seg_pt=None)
    for name, text in (("text.onnx", "hello"), ("text.torchscript", "hello"), ("hello.pt", "hello"),
                       ("notes.txt", "x\n"), ("broken.yaml", "train: [images\n"), ("empty.yaml", "")):
        (root / name).write_text(text)
    (root / "one.pt").write_bytes(b"\x80")
    (root / "folder").mkdir()
    (root / "a_file").write_text("a file, not a folder")
    (root / "zero.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    video = demo["video"].read_bytes()
    (root / "truncated.mp4").write_bytes(video[:len(video) // 3])
    ck = torch.load(pt, weights_only=False)
    torch.save(ck, root / "old.pt", _use_new_zipfile_serialization=False)
    (root / "wrong_train.yaml").write_text(yaml.safe_dump({"path": str(demo["root"] / "det"), "train": "images/nope",
                                                            "val": "images/val", "names": NAMES}))
    f.out_of_range = _dataset(root, demo, "out_of_range", label="7 0.5 0.5 0.2 0.2\n")
    f.nan = _dataset(root, demo, "nan", label="0 nan 0.5 0.2 0.2\n")
    f.corrupt_val = _dataset(root, demo, "corrupt_val", corrupt_split="val")
    f.corrupt_train = _dataset(root, demo, "corrupt_train", corrupt_split="train")
    f.fmap_text = _model_yaml(root, "fmap_text", [1024, "20x20"])
    f.heads0 = _model_yaml(root, "heads0", [1024, {"q_size": [20, 20], "n_heads": 0}])
    return f


# (id, task, args from `files` and the project folder, words the error line holds)
TABLE = [
    ("imgsz-0-detect", "detect", lambda f: ["--weights", f.pt, "--source", f.images, "--imgsz", "0"],
     "--imgsz 0 must be positive"),
    ("imgsz-neg-val", "val", lambda f: ["--weights", f.pt, "--data", f.data, "--imgsz", "-64"],
     "--imgsz -64 must be positive"),
    ("imgsz-0-export", "export", lambda f: ["--weights", f.pt, "--include", "onnx", "--imgsz", "0"],
     "--imgsz 0 must be positive"),
    ("batch-0", "train", lambda f: ["--cfg", DET_CFG, "--data", f.data, *TRAIN, "--batch-size", "0"],
     "--batch-size 0 must be at least 1"),
    ("epochs-0", "train", lambda f: ["--cfg", DET_CFG, "--data", f.data, *TRAIN, "--epochs", "0"],
     "--epochs 0 must be at least 1"),
    ("epochs-neg", "train", lambda f: ["--cfg", DET_CFG, "--data", f.data, *TRAIN, "--epochs", "-1"],
     "--epochs -1 must be at least 1"),
    ("project-under-a-file", "detect",
     lambda f: ["--weights", f.pt, "--source", f.images, "--imgsz", IMGSZ, "--project", f.root / "a_file" / "runs"],
     "is a file, not a folder"),
    ("weights-empty-detect", "detect", lambda f: ["--weights", "", "--source", f.images], "--weights is empty"),
    ("weights-empty-val", "val", lambda f: ["--weights", "", "--data", f.data], "--weights is empty"),
    ("weights-empty-export", "export", lambda f: ["--weights", "", "--include", "onnx"], "--weights is empty"),
    ("weights-folder", "detect", lambda f: ["--weights", f.root / "folder", "--source", f.images], "is a folder"),
    ("text-onnx", "detect", lambda f: ["--weights", f.root / "text.onnx", "--source", f.images],
     "is not a valid ONNX model"),
    ("text-torchscript", "val", lambda f: ["--weights", f.root / "text.torchscript", "--data", f.data],
     "is not a TorchScript model"),
    ("one-byte-pt", "detect", lambda f: ["--weights", f.root / "one.pt", "--source", f.images],
     "is corrupt or not a PyTorch checkpoint"),
    ("hello-pt", "val", lambda f: ["--weights", f.root / "hello.pt", "--data", f.data],
     "is corrupt or not a PyTorch checkpoint"),
    ("old-format-pt", "detect", lambda f: ["--weights", f.root / "old.pt", "--source", f.images],
     "old non-zip format"),
    ("export-of-onnx", "export", lambda f: ["--weights", f.onnx, "--include", "onnx"],
     "export reads a PyTorch checkpoint"),
    ("data-broken", "val", lambda f: ["--weights", f.pt, "--data", f.root / "broken.yaml"], "is not valid YAML"),
    ("data-empty", "val", lambda f: ["--weights", f.pt, "--data", f.root / "empty.yaml"], "is empty"),
    ("data-broken-train", "train", lambda f: ["--cfg", DET_CFG, "--data", f.root / "broken.yaml", *TRAIN],
     "is not valid YAML"),
    ("source-txt", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "notes.txt"],
     "a .txt source lists image/video paths"),
    ("source-glob-no-match", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "*.nothing"],
     "has no images or videos"),
    ("source-empty-folder", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "folder"],
     "has no images or videos"),
    ("fmapsize-text", "train", lambda f: ["--cfg", f.fmap_text, "--data", f.data, *TRAIN], "'20x20'"),
    ("n-heads-0", "train", lambda f: ["--cfg", f.heads0, "--data", f.data, *TRAIN],
     "n_heads (0) and n_groups (4) must be positive"),
    ("wrong-train-path", "train", lambda f: ["--cfg", DET_CFG, "--data", f.root / "wrong_train.yaml", *TRAIN],
     "train images not found at"),
    ("class-out-of-range-val", "val", lambda f: ["--weights", f.pt, "--data", f.out_of_range, "--imgsz", IMGSZ],
     "has class 7, but the YAML names 3 classes"),
    ("nan-labels-val", "val", lambda f: ["--weights", f.pt, "--data", f.nan, "--imgsz", IMGSZ],
     "has NaN or infinite values"),
    ("corrupt-val-images", "val", lambda f: ["--weights", f.pt, "--data", f.corrupt_val, "--imgsz", IMGSZ],
     "cannot be read as an image"),
    ("corrupt-train-images", "train", lambda f: ["--cfg", DET_CFG, "--data", f.corrupt_train, *TRAIN],
     "none of the 8 train images"),
    ("video-junk-detect", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "junk.mp4"],
     "junk.mp4 cannot be read"),
    ("video-0-frames-detect", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "zero.mp4"],
     "zero.mp4 cannot be read"),
    ("video-truncated-detect", "detect", lambda f: ["--weights", f.pt, "--source", f.root / "truncated.mp4"],
     "truncated.mp4 cannot be read"),
    ("video-junk-segment", "segment-predict", lambda f: ["--weights", f.pt, "--source", f.root / "junk.mp4"],
     "junk.mp4 cannot be read"),
    ("video-truncated-segment", "segment-predict",
     lambda f: ["--weights", f.pt, "--source", f.root / "truncated.mp4"], "truncated.mp4 cannot be read"),
    ("onnx-64-at-128", "detect", lambda f: ["--weights", f.onnx, "--source", f.images, "--imgsz", "128"],
     "was exported at --imgsz 64"),
]


def _tree(*roots: Path) -> set:
    """Every path under `roots`, except YOLOv5's label caches."""
    return {p for r in roots if r.exists() for p in r.rglob("*") if p.suffix != ".cache"}


def assert_one_error(rc: int, err: str, words: str) -> str:
    """rc 2; the last stderr line is the only `error:` line and holds `words`; no traceback. Returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert rc == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert words in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_bad_input_is_one_error_line_and_leaves_nothing(case, files, tmp_path, capsys):
    _, task, args, words = case
    project = tmp_path / "runs"
    argv = [*args(files), *DEVICE]
    if task != "export" and "--project" not in argv:
        argv += ["--project", project]
    before = _tree(files.root, tmp_path)
    rc = run_task(task, *argv)
    assert_one_error(rc, capsys.readouterr().err, words)
    assert _tree(files.root, tmp_path) == before
    assert not project.exists()


def test_read_only_project(files, tmp_path, capsys, monkeypatch):
    """A folder the process cannot write to (faked: the tests may run as root, who can write anywhere)."""
    project = tmp_path / "read-only"
    project.mkdir()
    real_access = input_checks.os.access
    monkeypatch.setattr(input_checks.os, "access", lambda p, mode: Path(p) != project and real_access(p, mode))
    rc = run_task("detect", "--weights", files.pt, "--source", files.images, *DEVICE, "--project", project)
    assert_one_error(rc, capsys.readouterr().err, f"{project} is not writable")
    assert list(project.iterdir()) == []


# ---- a fuzz of junk checkpoints: 30 files from a fixed seed -------------------------------------------
def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def junk_checkpoints(root: Path, real: Path) -> list:
    """30 junk .pt files: random bytes (8), the real checkpoint truncated at 10 offsets, zips with wrong members,
    pickles of the wrong things."""
    rng = random.Random(15)
    real_bytes = real.read_bytes()
    with zipfile.ZipFile(real) as z:
        prefix = z.namelist()[0].split("/")[0]
        real_pkl = z.read(f"{prefix}/data.pkl")
    out = []
    for i in range(8):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        if i % 3 == 0:
            data = b"PK\x03\x04" + data  # a zip's magic, then junk
        elif i % 3 == 1:
            data = b"\x80\x02" + data  # a pickle's protocol header, then junk
        out.append((root / f"random{i}.pt", data))
    for frac in (0.0005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.9999):
        out.append((root / f"truncated{frac}.pt", real_bytes[:max(1, int(len(real_bytes) * frac))]))
    for path, data in out:
        path.write_bytes(data)
    files = [p for p, _ in out]
    files += [
        _zip(root / "zip_no_pkl.pt", {"archive/version": "3\n"}),
        _zip(root / "zip_text_pkl.pt", {"archive/data.pkl": "hello", "archive/version": "3\n"}),
        _zip(root / "zip_pkl_no_storages.pt", {f"{prefix}/data.pkl": real_pkl, f"{prefix}/version": "3\n"}),
        _zip(root / "zip_bad_version.pt", {"archive/data.pkl": real_pkl, "archive/version": "999\n"}),
        _zip(root / "zip_readme.pt", {"README.txt": "not a checkpoint"}),
        _zip(root / "zip_empty.pt", {}),
    ]
    for name, obj in (("int", 42), ("list", [1, 2, 3]), ("dict", {"epoch": 3}), ("tensor", torch.zeros(2))):
        torch.save(obj, root / f"saved_{name}.pt")
        files.append(root / f"saved_{name}.pt")
    (root / "legacy_junk.pt").write_bytes(checkpoints._LEGACY_MAGIC + bytes(rng.randrange(256) for _ in range(500)))
    files.append(root / "legacy_junk.pt")
    (root / "empty.pt").write_bytes(b"")
    files.append(root / "empty.pt")
    assert len(files) == 30
    return files


@pytest.fixture(scope="module")
def junk(files, tmp_path_factory) -> list:
    """The 30 junk checkpoints, made once."""
    return junk_checkpoints(tmp_path_factory.mktemp("junk"), files.pt)


@pytest.mark.parametrize("index", range(30))
def test_junk_checkpoint_is_one_error_line(index, junk, files, tmp_path, capsys):
    path = junk[index]
    rc = run_task("detect", "--weights", path, "--source", files.images, *DEVICE, "--project", tmp_path / "runs")
    line = assert_one_error(rc, capsys.readouterr().err, str(path))
    assert any(w in line for w in ("corrupt or not a PyTorch checkpoint", "is not a YOLOv5 checkpoint",
                                   "old non-zip format")), line
    assert not (tmp_path / "runs").exists()


# ---- messages ----------------------------------------------------------------------------------------
def test_old_format_checkpoint_loads_when_trusted(files):
    model = checkpoints.check_model_checkpoint(files.root / "old.pt", trust=True)
    saved = checkpoints.check_model_checkpoint(files.pt)
    assert torch.equal(model.stride, saved.stride)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))


def test_reason_is_never_cut_inside_a_sentence(files, monkeypatch):
    """The refusal quotes torch's reader: its whole first sentence, however long, and nothing after it."""
    from yolov5_dattn.errors import UserError
    long_sentence = "PytorchStreamReader failed " + "reading zip archive " * 20 + "here"
    two = "failed finding central directory. This is an internal miniz error. " + "x " * 200
    for message, quoted in ((long_sentence, long_sentence), (two, "failed finding central directory.")):
        def reader_error(*args, **kwargs):
            raise RuntimeError(message)

        monkeypatch.setattr(torch, "load", reader_error)
        with pytest.raises(UserError) as e:
            checkpoints.load(files.pt)
        assert str(e.value) == (f"checkpoint {files.pt} is corrupt or not a PyTorch checkpoint ({quoted}): "
                                f"re-save or re-train it")


def test_trust_env_prints_one_notice(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(checkpoints.TRUST_ENV, "1")
    rc = run_task("detect", "--weights", files.pt, "--source", files.images, *DEVICE, "--imgsz", "0",
                  "--project", tmp_path / "runs")
    err = capsys.readouterr().err
    assert_one_error(rc, err, "--imgsz 0")
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and f"{checkpoints.TRUST_ENV}=1" in notices[0] and "full pickle" in notices[0]


def test_trust_flag_holds_for_its_run_only(files, tmp_path, monkeypatch):
    monkeypatch.delenv(checkpoints.TRUST_ENV, raising=False)
    run_task("detect", "--weights", files.pt, "--source", files.images, *DEVICE, "--imgsz", "0",
             "--trust-checkpoint", "--project", tmp_path / "runs")
    assert not checkpoints.trusted()


# ---- ONNX metadata is never evaluated ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def crafted_onnx(files, tmp_path_factory) -> SimpleNamespace:
    """The real ONNX export whose metadata 'names' is an expression that creates a marker file."""
    import onnx
    root = tmp_path_factory.mktemp("crafted")
    marker = root / "marker"
    model = onnx.load(str(files.onnx))
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or {NAMES!r}"
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = payload
    path = root / "crafted.onnx"
    onnx.save(model, str(path))
    return SimpleNamespace(path=path, marker=marker, payload=payload)


def test_onnx_payload_would_run_under_eval(crafted_onnx):
    """Control: the metadata is a working payload under YOLOv5's `eval`."""
    assert eval(crafted_onnx.payload) == NAMES  # noqa: S307 (the point of the control)
    assert crafted_onnx.marker.exists()
    crafted_onnx.marker.unlink()


@pytest.mark.parametrize("task", ["detect", "val"])
def test_onnx_names_payload_never_runs_in_the_scripts(task, crafted_onnx, files, tmp_path, capsys):
    where = ["--source", files.images] if task == "detect" else ["--data", files.data]
    rc = run_task(task, "--weights", crafted_onnx.path, *where, "--imgsz", IMGSZ, *DEVICE,
                  "--project", tmp_path / "runs")
    assert_one_error(rc, capsys.readouterr().err, f"--weights {crafted_onnx.path}: its metadata 'names'")
    assert not crafted_onnx.marker.exists()
    assert not (tmp_path / "runs").exists()


def test_detect_multi_backend_reads_names_as_a_literal(crafted_onnx, files):
    """The library path (no pre-flight check): YOLOv5's own loader refuses the expression, and reads the
    real export's names."""
    from yolov5.models.common import DetectMultiBackend
    from yolov5_dattn.errors import UserError
    with pytest.raises(UserError, match=rf"^--weights {crafted_onnx.path}: its metadata 'names'"):
        DetectMultiBackend(str(crafted_onnx.path), device=torch.device("cpu"))
    assert not crafted_onnx.marker.exists()
    names = DetectMultiBackend(str(files.onnx), device=torch.device("cpu")).names
    assert names == NAMES and ast.literal_eval(repr(names)) == NAMES


@pytest.mark.parametrize("script", ["detect.py", "val.py"])
def test_real_process_prints_only_the_error(script, crafted_onnx, files, tmp_path):
    """In a fresh process (where YOLOv5's log lines reach stderr too), a crafted ONNX and a truncated video
    give the error line and nothing else: YOLOv5's echo of its options waits until the checks pass."""
    where = ["--source", files.root / "truncated.mp4"] if script == "detect.py" else ["--data", files.data]
    weights = files.pt if script == "detect.py" else crafted_onnx.path
    r = run_script(script, "--weights", weights, *where, "--imgsz", IMGSZ, *DEVICE, "--project", tmp_path / "runs",
                   cwd=tmp_path, log=tmp_path / "net.log")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert ("truncated.mp4 cannot be read" if script == "detect.py" else "its metadata 'names'") in lines[0]
    assert not crafted_onnx.marker.exists() and not (tmp_path / "runs").exists()


def test_good_onnx_still_runs_at_its_size(files, tmp_path, capsys):
    project = tmp_path / "runs"
    rc = run_task("detect", "--weights", files.onnx, "--source", files.images, "--imgsz", IMGSZ, *DEVICE,
                  "--project", project)
    assert rc == 0, capsys.readouterr().err
    assert len(list((project / "exp").glob("*.png"))) == len(list(files.images.iterdir()))
