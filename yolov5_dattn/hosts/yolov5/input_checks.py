"""Checks of what a run reads and where it writes, made before YOLOv5 creates its output folder.

YOLOv5 creates `runs/<task>/exp*` first and reads its inputs afterwards, so a bad input there ends in a
traceback and leaves an empty run folder. `entrypoint.main` calls these first; each bad input is one
`UserError` naming the flag or file and what to do:

- `check_numbers`: --imgsz, --batch-size, --epochs in range;
- `check_project`: --project can be created and written (export: the folder beside --weights);
- `check_weights_format`: a non-.pt --weights is a file of a format YOLOv5 can run, and an ONNX /
  TorchScript file loads, has readable metadata and (ONNX with a static shape) matches --imgsz;
- `check_data_yaml`, `check_dataset_files`: the data YAML parses; its image folders exist, hold images
  that can be read and labels whose classes are in range;
- `check_source`: --source names images or videos that can be read.
"""
import ast
import contextlib
import glob
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from yolov5_dattn.errors import UserError, first_sentence
from .preflight import TRAIN_TASKS
from .quiet import quiet_yolov5

MODEL_DIR_SUFFIXES = ("_openvino_model", "_saved_model", "_paddle_model", "_web_model")


# ---- numbers ---------------------------------------------------------------------------------------
def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_numbers(opt, task: str) -> None:
    """--imgsz > 0; --batch-size >= 1 (or -1, YOLOv5's AutoBatch, in training); --epochs >= 1."""
    imgsz = getattr(opt, "imgsz", None)
    if imgsz is not None and any(int(s) <= 0 for s in _as_list(imgsz)):
        sizes = _as_list(imgsz)
        text = " ".join(str(s) for s in (sizes[:1] if len(set(sizes)) == 1 else sizes))  # detect doubles one value
        raise UserError(f"--imgsz {text} must be positive: use a multiple of 32 such as 640 (or the size the "
                        f"model was trained / exported at)")
    resumed = task in TRAIN_TASKS and getattr(opt, "resume", False)
    batch = getattr(opt, "batch_size", None)
    if batch is not None and not resumed and (batch == 0 or batch < -1 or (batch < 0 and task not in TRAIN_TASKS)):
        auto = " (or -1 for AutoBatch on a GPU)" if task in TRAIN_TASKS else ""
        raise UserError(f"--batch-size {batch} must be at least 1{auto}: use e.g. --batch-size 16")
    epochs = getattr(opt, "epochs", None)
    if task in TRAIN_TASKS and epochs is not None and not resumed and epochs < 1:
        raise UserError(f"--epochs {epochs} must be at least 1: pass the number of epochs to train")


# ---- where the run writes ------------------------------------------------------------------------------
def _writable_folder(path: Path, flag: str) -> None:
    """UserError unless `path` is, or can be created as, a folder this process can write into."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder: pass a folder to write the run into")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable: pass a folder you can write to")


def check_project(opt, task: str) -> None:
    """--project (the run folder's parent) can be written; for export, the folder of each --weights."""
    if task == "export":
        for w in _as_list(getattr(opt, "weights", None)):
            if w:
                _writable_folder(Path(str(w)).resolve().parent, "--weights")
        return
    project = getattr(opt, "project", None)
    if project:
        _writable_folder(Path(str(project)), "--project")


# ---- weights other than .pt ------------------------------------------------------------------------------
def literal_names(text: str, source: str):
    """Class names stored as text in an exported model's metadata ("{0: 'person', ...}"), read as a
    Python literal (never evaluated). Returns a dict or list; UserError naming `source` otherwise."""
    try:
        names = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        names = None
    if not isinstance(names, (dict, list)):
        shown = str(text) if len(str(text)) <= 60 else str(text)[:57] + "..."
        raise UserError(f"{source}: its metadata 'names' ({shown!r}) is not a list or dict of class names, so it "
                        f"was not used (it is never evaluated): re-export the model with scripts/export.py")
    return names


def _requested_hw(opt, task: str) -> Optional[List[int]]:
    """(h, w) the run will feed the model, as YOLOv5 reads --imgsz (one value: square)."""
    imgsz = getattr(opt, "imgsz", None)
    if imgsz is None:
        return None
    sizes = [int(s) for s in _as_list(imgsz)]
    return sizes * 2 if len(sizes) == 1 else sizes[:2]


def _check_onnx(path: Path, opt, task: str) -> None:
    """The file loads in onnxruntime, its 'names' metadata is a literal, and a static input shape is the
    run's --imgsz."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"--weights {path}: running an ONNX model needs onnxruntime: pip install "
                        f"'yolov5-dattn[export]'") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"--weights {path} is not a valid ONNX model ({first_sentence(e)}): pass a file "
                        f"written by scripts/export.py --include onnx") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "names" in meta:
        literal_names(meta["names"], f"--weights {path}")
    shape = session.get_inputs()[0].shape  # e.g. [1, 3, 64, 64]; a --dynamic export has names there
    hw = _requested_hw(opt, task)
    static = len(shape) == 4 and all(isinstance(s, int) for s in shape[2:])
    if hw is not None and task != "export" and static and list(shape[2:]) != hw:
        exported = " ".join(str(s) for s in (shape[2:3] if shape[2] == shape[3] else shape[2:]))
        asked = " ".join(str(s) for s in (hw[:1] if hw[0] == hw[1] else hw))
        raise UserError(f"--weights {path} was exported at --imgsz {exported} (static input "
                        f"{'x'.join(map(str, shape))}) but --imgsz {asked} was given: use --imgsz {exported}, or "
                        f"re-export with --imgsz {asked} (or --dynamic)")


def _check_torchscript(path: Path) -> None:
    """The file loads as TorchScript and its config.txt (stride, names) is JSON."""
    import torch
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice: YOLOv5 prints it anyway
            torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    except Exception as e:
        raise UserError(f"--weights {path} is not a TorchScript model ({first_sentence(e)}): pass a file "
                        f"written by scripts/export.py --include torchscript") from None
    if extra["config.txt"]:
        try:
            json.loads(extra["config.txt"])
        except ValueError:
            raise UserError(f"--weights {path}: its config.txt metadata is not JSON: re-export the model with "
                            f"scripts/export.py") from None


def check_weights_format(path: Path, opt, task: str) -> None:
    """A --weights path that exists and is not a .pt: a file (or model folder) of a format YOLOv5 can run;
    ONNX and TorchScript files are loaded once to check them."""
    if task == "export":
        raise UserError(f"--weights {path}: export reads a PyTorch checkpoint (.pt), not "
                        f"{path.suffix or 'a folder'}: pass the .pt written by scripts/train.py")
    if path.is_dir() and not path.name.endswith(MODEL_DIR_SUFFIXES):
        raise UserError(f"--weights {path} is a folder: pass a .pt, .onnx or .torchscript file (e.g. "
                        f"runs/train/exp/weights/best.pt)")
    from yolov5.models.common import DetectMultiBackend
    try:
        kinds = DetectMultiBackend._model_type(str(path))
    except AssertionError:
        kinds = ()
    if not any(kinds):
        raise UserError(f"--weights {path}: {path.suffix or 'no suffix'} is not a model format YOLOv5 can run: "
                        f"pass a .pt, .onnx or .torchscript file")
    if path.suffix == ".onnx" and not getattr(opt, "dnn", False):
        _check_onnx(path, opt, task)
    elif path.suffix == ".torchscript":
        _check_torchscript(path)


# ---- data --------------------------------------------------------------------------------------------
def check_data_yaml(data: str) -> None:
    """--data parses as YAML and is a mapping (the dataset's path/train/val/names)."""
    from yolov5_dattn.core.yaml_mapping import read_mapping
    read_mapping(data, f"--data {data}", "a dataset YAML needs path, train, val and names keys")


@contextlib.contextmanager
def _silent():
    """No progress bars or INFO/WARNING lines from a scan whose findings YOLOv5 reports itself later."""
    with quiet_yolov5(logging.ERROR), contextlib.redirect_stderr(io.StringIO()):
        yield


def _image_files(path) -> List[str]:
    """The image files of a split as LoadImagesAndLabels lists them (folder, list file or glob)."""
    from yolov5.utils.dataloaders import IMG_FORMATS
    files = []
    for p in _as_list(path):
        p = Path(p)
        if p.is_dir():
            files += glob.glob(str(p / "**" / "*.*"), recursive=True)
        elif p.is_file():
            parent = str(p.parent) + os.sep
            files += [x.replace("./", parent, 1) if x.startswith("./") else x for x in p.read_text().strip().splitlines()]
    return sorted(x.replace("/", os.sep) for x in files if x.split(".")[-1].lower() in IMG_FORMATS)


def _why_unusable(im_file: str, lb_file: str) -> str:
    """Why YOLOv5 drops this image/label pair, in words: the image cannot be read, or the label's fault."""
    import numpy as np
    from PIL import Image
    from yolov5.utils.dataloaders import verify_image_label
    try:
        with Image.open(im_file) as im:
            im.verify()
    except Exception:
        return f"{im_file} cannot be read as an image"
    if os.path.isfile(lb_file):
        try:
            rows = [np.array(line.split(), dtype=np.float32) for line in Path(lb_file).read_text().splitlines()
                    if line.strip()]
        except ValueError:
            return f"label file {lb_file} has a value that is not a number"
        if any(not np.isfinite(r).all() for r in rows):
            return f"label file {lb_file} has NaN or infinite values"
    msg = verify_image_label((im_file, lb_file, ""))[-1]
    return msg.split("ignoring corrupt image/label: ")[-1] or f"{im_file} was dropped"


def _scan_split(data_yaml: str, split: str, path, nc: int, single_cls: bool, workers: int) -> None:
    """Build the split's dataset once as YOLOv5 will (its label cache makes YOLOv5's own scan cheap), and
    refuse a split with no usable image or with a label class >= nc."""
    from yolov5.utils.dataloaders import LoadImagesAndLabels, img2label_paths, verify_image_label
    where = ", ".join(str(p) for p in _as_list(path))
    missing = [str(p) for p in _as_list(path) if not (Path(p).exists() or any(c in str(p) for c in "*?["))]
    if missing:
        raise UserError(f"--data {data_yaml}: {split} images not found at {missing[0]}: fix path:/{split}: in "
                        f"the YAML")
    try:
        with _silent():
            dataset = LoadImagesAndLabels(path, img_size=64, batch_size=1, augment=False, rect=False,
                                          single_cls=single_cls, stride=32, workers=workers)
    except Exception as e:  # YOLOv5 7.0.14 fails with a ValueError (unpacking) when no image is usable
        dataset, error = None, e
    if dataset is None or not dataset.im_files:
        files = _image_files(path)
        if files:
            with _silent():
                dropped = next((i for i, args in enumerate(zip(files, img2label_paths(files), [""] * len(files)))
                                if verify_image_label(args)[0] is None), None)
            if dropped is not None:
                reason = _why_unusable(files[dropped], img2label_paths(files[dropped:dropped + 1])[0])
                raise UserError(f"--data {data_yaml}: none of the {len(files)} {split} images at {where} can be "
                                f"used (e.g. {reason}): fix or replace them")
        reason = "no images" if dataset is not None else \
            first_sentence(str(error).split("Error loading data from", 1)[-1].split(": ", 1)[-1])
        raise UserError(f"--data {data_yaml}: {split} images at {where} cannot be loaded ({reason}): fix "
                        f"path:/{split}: in the YAML")
    if not single_cls:
        for labels, label_file in zip(dataset.labels, dataset.label_files):
            if len(labels) and labels[:, 0].max() >= nc:
                bad = int(labels[:, 0].max())
                raise UserError(f"--data {data_yaml}: label file {label_file} has class {bad}, but the YAML names "
                                f"{nc} classes (0..{nc - 1}): fix the labels or the YAML's names")


def check_dataset_files(data_yaml: str, data: Dict, opt, task: str) -> None:
    """The splits this run reads (train: train and val; val: --task's split) hold usable images and labels
    with classes below nc. `data` is YOLOv5's `check_dataset` result (absolute split paths)."""
    if int(os.environ.get("RANK", -1)) not in (-1, 0):  # DDP: the first process checks; it writes the caches
        return
    if task in TRAIN_TASKS:
        splits = ["train", "val"]
    else:
        split = getattr(opt, "task", "val")
        splits = [split if split in ("train", "val", "test") else "val"]
    nc = 1 if getattr(opt, "single_cls", False) else int(data.get("nc", len(data.get("names", ()))))
    for split in splits:
        if data.get(split):
            _scan_split(data_yaml, split, data[split], nc, bool(getattr(opt, "single_cls", False)),
                        int(getattr(opt, "workers", 8)))


# ---- --source ------------------------------------------------------------------------------------------
def _source_files(source: str) -> List[str]:
    """The files LoadImages will read for a file / folder / glob / .txt-list source."""
    paths: Sequence[str] = [source]
    listed = Path(source).suffix == ".txt" and Path(source).is_file()
    if listed:
        paths = Path(source).read_text().rsplit()
        if not paths:
            raise UserError(f"--source {source} is an empty list: a .txt source lists image/video paths, one per "
                            f"line")
    files = []
    for p in sorted(paths) if len(paths) > 1 else paths:
        full = str(Path(p).resolve())
        if "*" in full:
            files += sorted(glob.glob(full, recursive=True))
        elif os.path.isdir(full):
            files += sorted(glob.glob(os.path.join(full, "*.*")))
        elif os.path.isfile(full):
            files.append(full)
        elif listed:
            raise UserError(f"--source {source}: a .txt source lists image/video paths, one per line, and {p} in it "
                            f"does not exist: fix the list or pass the image/folder/video itself")
        else:  # a glob pattern YOLOv5 does not expand (only * is)
            raise UserError(f"--source {source} not found: pass an image, a folder, a glob with *, a video or a "
                            f".txt list of paths")
    return files


@contextlib.contextmanager
def _no_native_stderr():
    """Discard what native code writes to file descriptor 2 within the block (FFmpeg's own "moov atom not
    found" for a broken video: the check reports that file in its one line)."""
    import sys
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreter): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _video_readable(path: str) -> bool:
    """OpenCV opens the video, reports frames and decodes the first one."""
    import cv2
    with _no_native_stderr():
        cap = cv2.VideoCapture(path)
        try:
            return bool(cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0 and cap.read()[0])
        finally:
            cap.release()


def check_source(source: str) -> None:
    """A file / folder / glob / list --source holds at least one image or video, and every video opens
    and decodes (a 0-frame or corrupt one would stop YOLOv5 with a ZeroDivisionError)."""
    from yolov5.utils.dataloaders import IMG_FORMATS, VID_FORMATS
    if source.isnumeric() or "://" in source or source.endswith(".streams") or source.startswith("screen"):
        return
    files = _source_files(source)
    media = [f for f in files if f.split(".")[-1].lower() in IMG_FORMATS + VID_FORMATS]
    if not media:
        raise UserError(f"--source {source} has no images or videos ({', '.join(IMG_FORMATS + VID_FORMATS)}): pass "
                        f"an image, a video, a folder of them, a glob or a .txt list of their paths")
    for f in media:
        if f.split(".")[-1].lower() in VID_FORMATS and not _video_readable(f):
            raise UserError(f"--source {source}: video {f} cannot be read (corrupt, truncated or 0 frames): "
                            f"re-encode it or pass another file")
