"""Checks of what an ultralytics run reads and where it writes, made before any work.

ultralytics' trainer and validator create `runs/<task>/<name>` (args.yaml, weights/) in their `__init__` and only
then read the dataset, round imgsz or build the optimizer, so a bad value there ends in a traceback and a half-made
run folder (or, for imgsz=0, in a run at another size); `YOLO("text.pt")` fails inside torch's unpickler.
These checks run first, at the same seam as the feature-map checks (`Model.train`, `.val`, `.predict`, `.export`,
and the model loaders `Model._load` / `Model._new`), so the `yolov5-dattn yolo` command and the Python API both get
them. Each bad input is one `InputError` (a `UserError`) naming ultralytics' own key (`data=`, `imgsz=`, ...) and
what to do:

- `check_args`: the merged arguments pass ultralytics' own `get_cfg` (types, ranges: epochs=abc, lr0=2);
- `check_numbers`: imgsz, batch, workers in range; `check_device`; `check_optimizer`; `check_format`;
- `check_project`: the run folder's parent can be created and written;
- `check_data`: the data YAML is read with `yaml.safe_load` (nothing in it runs), has train/val and names, and
  the folders the run reads hold images; a dataset that is not on disk is refused, never downloaded;
- `check_source`: predict's source names images or videos that can be opened;
- `check_model_file`, `check_model_yaml`: model= is a file ultralytics can load (a .pt is a torch archive),
  never fetched from the network.
"""
import functools
import itertools
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from yolov5_dattn import patching
from yolov5_dattn.errors import UserError, first_sentence
from .pretrained_check import message

__all__ = ["FORMAT_ALIASES", "InputError", "STEP", "WHY", "apply", "canonical_format", "check_args", "check_data",
           "check_device", "check_format", "check_model_file", "check_model_yaml", "check_numbers", "check_optimizer",
           "check_project", "check_run", "check_source", "coreml_refusal", "run_args"]

STEP = "input checks"
WHY = "bad input (data, model, source, numbers, device, project) is refused before the run folder is made"
LOAD_WHY = "a model= file ultralytics cannot load is refused in one line, never fetched from the network"
NO_DOWNLOAD = "this command does not download"
# BaseTrainer.build_optimizer's names (ultralytics 8.4.190); anything else fails after the run folder is made
OPTIMIZERS = ("Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "SGD", "MuSGD", "auto")
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # torch's pre-zip format
REMOTE = ("http://", "https://", "ul://", "gs://", "rtsp://", "rtmp://", "tcp://")


class InputError(UserError):
    """An argument of an ultralytics run cannot work (the message names the key and what to do)."""


# ---- the arguments ultralytics will use -------------------------------------------------------------------------
def run_args(owner, mode: str, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The arguments `owner.<mode>(**kwargs)` hands its trainer / validator / predictor / exporter, merged as
    ultralytics 8.4.190's `Model` methods merge them (model overrides, the method's defaults, the call's keywords),
    before ultralytics' defaults fill the rest."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, TASK2DATA
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml
    overrides = dict(owner.overrides)
    if mode == "train":
        if kwargs.get("cfg"):
            overrides = YAML.load(check_yaml(kwargs["cfg"]))
        custom = {"data": (overrides.get("data") if kwargs.get("cfg") else None) or DEFAULT_CFG_DICT["data"] or
                  TASK2DATA.get(owner.task), "model": owner.overrides.get("model"), "task": owner.task}
        return {**overrides, **custom, **kwargs, "mode": "train"}
    if mode == "val":
        return {**overrides, "rect": True, **kwargs, "mode": "val"}
    if mode == "predict":
        from ultralytics.engine import model as host  # `yolo predict` saves: Model.predict reads that from ARGV
        argv = list(getattr(host, "ARGV", []))
        cli = bool(argv) and argv[0].endswith(("yolo", "ultralytics")) and \
            any(x in argv for x in ("predict", "track", "mode=predict", "mode=track"))
        return {**overrides, "conf": 0.25, "batch": 1, "save": cli, "mode": "predict", "rect": True, "embed": None,
                **kwargs}
    imgsz = getattr(owner.model, "args", {}).get("imgsz", DEFAULT_CFG_DICT["imgsz"])
    return {**overrides, "imgsz": imgsz, "batch": 1, "data": None, "device": None, "verbose": False, **kwargs,
            "mode": "export"}


def check_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    """`args` through ultralytics' own `get_cfg` (unknown keys, wrong types, values out of range), as the run will
    pass them; returns the full merged configuration (ultralytics' defaults filled in)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg
    try:
        return vars(get_cfg(DEFAULT_CFG_DICT, dict(args)))
    except (TypeError, ValueError, SyntaxError, KeyError) as e:
        raise InputError(message(e)) from None


# ---- numbers, device, optimizer, format -------------------------------------------------------------------------
def _imgsz_list(value) -> Optional[List[float]]:
    """imgsz as ultralytics' check_imgsz reads it (640, [640, 480], '640', '[640,480]'); None if unreadable."""
    import ast
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return list(value)


def check_numbers(cfg: Mapping[str, Any], mode: str) -> None:
    """imgsz positive (one value, or [h, w] for predict / export); batch >= 1 (train also takes -1 for AutoBatch
    and a fraction 0-1 of GPU memory); workers >= 0."""
    imgsz = cfg.get("imgsz")
    sizes = _imgsz_list(imgsz)
    if sizes is None:
        raise InputError(f"imgsz={imgsz} is not an image size: use a number such as imgsz=640 (predict and export "
                         f"also take imgsz=[h, w])")
    if any(s <= 0 for s in sizes):
        raise InputError(f"imgsz={imgsz} must be positive: use a multiple of 32 such as imgsz=640 (or the size the "
                         f"model was trained at)")
    if len(sizes) > 2:
        raise InputError(f"imgsz={imgsz} has {len(sizes)} values: give one size (imgsz=640) or [h, w]")
    batch = cfg.get("batch")
    if isinstance(batch, (int, float)) and not isinstance(batch, bool):
        train_ok = batch == -1 or batch >= 1 or 0 < batch < 1
        if (mode == "train" and not train_ok) or (mode != "train" and batch < 1):
            more = " (or -1 for AutoBatch, or a fraction such as 0.7 of GPU memory)" if mode == "train" else ""
            raise InputError(f"batch={batch} must be at least 1{more}: use e.g. batch=16")
    workers = cfg.get("workers")
    if isinstance(workers, int) and workers < 0:
        raise InputError(f"workers={workers} must be 0 or more: use workers=0 to load data in the main process")


def check_device(value) -> None:
    """device= names a device this machine has: '' (auto), cpu, mps, a CUDA index list ('0', '0,1', 'cuda:0'),
    npu / xpu with their backend; -1 (an idle GPU) and other backends are ultralytics' to resolve."""
    import torch
    if value is None or isinstance(value, torch.device):
        return
    text = str(value).strip().lower()
    if not text or text in ("cpu", "mps", "mps:0", "none") or text.startswith(("tpu", "intel", "vulkan")) or \
            "-1" in text:
        return
    if text.startswith(("npu", "xpu")):
        backend = getattr(torch, text[:3], None)
        if backend is None or not backend.is_available():
            raise InputError(f"device={value}: this machine has no {text[:3].upper()} backend: use device=cpu")
        return
    for remove in ("cuda:", "(", ")", "[", "]", "'", " "):
        text = text.replace(remove, "")
    text = "0" if text == "cuda" else text
    indices = [x for x in text.split(",") if x]
    if not indices or not all(x.isdigit() for x in indices):
        raise InputError(f"device={value} is not a device: use device=cpu, device=0 (a CUDA GPU) or device=0,1")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [x for x in indices if int(x) >= count]
    if missing:
        have = f"torch sees {count} CUDA device{'s' if count != 1 else ''}"
        use = f"device=0..{count - 1} or device=cpu" if count else "device=cpu"
        raise InputError(f"device={value}: there is no CUDA device {missing[0]} ({have}): use {use}")


def check_optimizer(value) -> None:
    """optimizer= is one ultralytics' trainer builds."""
    if str(value) not in OPTIMIZERS:
        raise InputError(f"optimizer={value} is not an optimizer ultralytics builds: use one of "
                         f"{', '.join(OPTIMIZERS)}")


# names ultralytics' Exporter accepts besides its table's (it renames them before exporting): tflite and tfjs became
# LiteRT in 8.4.83
FORMAT_ALIASES = {"tflite": "litert", "tfjs": "litert", "tensorrt": "engine", "trt": "engine",
                  "mlmodel": "coreml", "mlpackage": "coreml", "mlprogram": "coreml", "apple": "coreml", "ios": "coreml"}


def canonical_format(value) -> str:
    """format= as the Exporter will run it: lower case, aliases resolved ('tflite' -> 'litert')."""
    fmt = str(value).lower()
    return FORMAT_ALIASES.get(fmt, fmt)


def coreml_refusal(cfg: Mapping[str, Any]) -> Optional[str]:
    """Why format=coreml cannot run with these options (one line), or None: the CoreML export here
    (`edge_export.export_coreml`) is an fp32 ML program at a fixed size, without NMS."""
    if str(cfg.get("format")).lower() == "mlmodel":
        return ("format=mlmodel: the legacy neural-network CoreML file is not offered: use format=coreml (an ML "
                "program, .mlpackage)")
    for key, unsupported in (("nms", bool(cfg.get("nms"))), ("dynamic", bool(cfg.get("dynamic"))),
                             ("half", bool(cfg.get("half"))), ("quantize", cfg.get("quantize") not in (None, 32))):
        if unsupported:
            return (f"format=coreml {key}={cfg.get(key)}: the CoreML export is an fp32 ML program at a fixed size "
                    f"without NMS: remove {key}=")
    return None


def check_format(value) -> None:
    """format= is one of ultralytics' export formats or one of their aliases."""
    from ultralytics.engine.exporter import export_formats
    formats = [f for f in export_formats()["Argument"] if f != "-"]
    if canonical_format(value) not in formats:
        raise InputError(f"format={value} is not an export format: use one of {', '.join(formats)}")


# ---- where the run writes ---------------------------------------------------------------------------------------
def check_project(cfg: Mapping[str, Any]) -> None:
    """project= / name= (the run folder) can be created and written: no file on the way, a writable parent."""
    from ultralytics.utils import RUNS_DIR
    project = cfg.get("project")
    root = Path(str(project)) if project else Path(RUNS_DIR) / str(cfg.get("task") or "detect")
    folder = root / str(cfg.get("name") or "")
    key = "project" if project else "name"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{key}={cfg.get(key)}: {existing} is a file, not a folder: pass a folder to write the run "
                         f"into (project=<folder>)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{key}={cfg.get(key)}: {existing} is not writable: pass a folder you can write to "
                         f"(project=<folder>)")


# ---- data= ------------------------------------------------------------------------------------------------------
def _data_file(data: str) -> Optional[Path]:
    """The YAML ultralytics' check_det_dataset opens for `data` (a path, a bare name such as 'coco8', a file name it
    finds among its shipped dataset YAMLs, or the one YAML in a folder); None for a local archive it unpacks."""
    import tarfile
    from ultralytics.data.utils import find_dataset_yaml
    from ultralytics.utils.checks import check_file
    if data.lower().startswith(REMOTE) or "://" in data:
        raise InputError(f"data={data} is a URL and {NO_DOWNLOAD} datasets: download it yourself and pass the "
                         f"local data YAML")
    names = [data] if Path(data).exists() or Path(data).suffix in (".yaml", ".yml") else \
        [f"{data}.yaml", f"{data}.yml", data]
    found = next((f for f in (check_file(n, download=False, hard=False) for n in names) if f), None)
    if not found:
        raise InputError(f"data={data}: no such file: give the path of a dataset YAML (path, train, val, names)")
    file = Path(found)
    if file.is_dir():
        try:
            file = Path(find_dataset_yaml(file))
        except AssertionError:
            raise InputError(f"data={data} is a folder without exactly one dataset YAML in it: pass the YAML "
                             f"itself") from None
    if zipfile.is_zipfile(file) or tarfile.is_tarfile(file):
        return None
    if file.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"data={data} is not a dataset YAML (.yaml): pass one with path, train, val and names")
    return file


def _read_yaml(file: Path, data: str) -> dict:
    """The data YAML as a mapping, read with yaml.safe_load (no tag constructs an object, nothing runs)."""
    from yolov5_dattn.core.yaml_mapping import read_mapping
    return read_mapping(file, f"data={data}", "a dataset YAML needs path, train, val and names keys", InputError)


def _check_keys(d: dict, data: str, splits: Sequence[str]) -> None:
    """The keys check_det_dataset requires: types, train and val (or validation), names or an integer nc."""
    from ultralytics.data.utils import DATASET_KEY_TYPES
    from ultralytics.nn.autobackend import check_class_names
    for key, types in DATASET_KEY_TYPES.items():
        if d.get(key) is not None and not isinstance(d[key], types):
            expected = " or ".join(t.__name__ for t in types)
            raise InputError(f"data={data}: its {key}: is a {type(d[key]).__name__}, not a {expected}: fix the YAML")
    for key in ("train", "val", *splits):
        if key not in d and not (key == "val" and "validation" in d):
            raise InputError(f"data={data} has no {key}: key: a dataset YAML needs path, train, val and names"
                             + (" (or pass split=val)" if key not in ("train", "val") else ""))
    if d.get("names") is None and "nc" not in d:
        raise InputError(f"data={data} has no names: key: list the class names, e.g. names: {{0: person, 1: car}}")
    nc = d.get("nc")
    if "nc" in d and (isinstance(nc, bool) or not isinstance(nc, (int, float, str)) or
                      not str(nc).replace(".0", "", 1).isdigit()):
        raise InputError(f"data={data}: nc: {nc} is not a whole number of classes: fix it or drop it (names "
                         f"gives the count)")
    if d.get("names") is not None:
        if "nc" in d and len(d["names"]) != int(float(nc)):
            raise InputError(f"data={data}: names has {len(d['names'])} classes but nc: {nc}: make them agree")
        try:
            check_class_names(d["names"])
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"data={data}: its names: {first_sentence(e).strip(chr(34))}: number the classes "
                             f"0..n-1") from None


def _split_paths(d: dict, file: Path, key: str, data: str) -> List[Path]:
    """The folders or list files of split `key`, resolved as check_det_dataset resolves them."""
    from ultralytics.utils import DATASETS_DIR
    root = Path(d.get("path") or file.parent)
    if not root.exists() and not root.is_absolute():
        root = (Path(DATASETS_DIR) / root).resolve()
    value = d.get(key) if key in d else d.get("validation")
    if not value:
        raise InputError(f"data={data}: its {key}: is empty: give the folder (or .txt list) of its {key} images")
    out = []
    for v in value if isinstance(value, list) else [value]:
        x = (root / str(v)).resolve()
        if not x.exists() and str(v).startswith("../"):
            x = (root / str(v)[3:]).resolve()
        out.append(x)
    return out


def _images(path: Path):
    """Image files of a split (a folder, searched recursively, or a .txt list), lazily, as ultralytics lists them."""
    from ultralytics.data.utils import IMG_FORMATS
    if path.is_dir():
        files = (str(p) for p in path.rglob("*.*"))
    else:
        parent = str(path.parent) + os.sep
        files = (x.replace("./", parent, 1) if x.startswith("./") else x
                 for x in path.read_text(errors="ignore").strip().splitlines())
    return (f for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS)


def _readable_image(path: str) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for a file that is not an image
        return False


def _unusable(images, d: dict, task: str, single_cls: bool) -> Optional[str]:
    """Why ultralytics would drop every image of a split (its own per-image check, `verify_image_label`: an image
    it cannot read, a label row it refuses such as a class >= nc); None as soon as one image is usable."""
    from ultralytics.data.utils import img2label_paths, verify_image_label
    from ultralytics.nn.autobackend import check_class_names
    nc = len(check_class_names(d["names"])) if d.get("names") is not None else int(float(d["nc"]))
    nkpt, ndim = (d.get("kpt_shape") or (0, 0)) if task == "pose" else (0, 0)
    first = None
    for im in images:
        lb = img2label_paths([im])[0]
        result = verify_image_label((im, lb, "", task == "pose", nc, nkpt, ndim, single_cls))
        if result[0] is not None:
            return None
        if first is None:
            first = str(result[-1]).split("ignoring corrupt image/label: ")[-1].strip() or f"{im} was dropped"
    return first


def check_data(data, task: str, splits: Sequence[str], single_cls: bool = False) -> None:
    """data= of a detect / segment / pose / obb run (a YAML) or a classify run (a folder): it exists, parses, and each
    split in `splits` ('train', 'val', 'test') is on disk with at least one image (and its labels) that ultralytics
    would use."""
    if data is None or isinstance(data, dict):
        return
    text = str(data)
    if task == "classify" and not text.lower().endswith((".yaml", ".yml")):
        if text.lower().startswith(REMOTE) or not Path(text).exists():
            raise InputError(f"data={text}: no such folder, and {NO_DOWNLOAD} datasets: pass a folder with train/ "
                             f"and val/ (one subfolder per class)")
        return
    file = _data_file(text)
    if file is None:  # a local .zip / .tar: ultralytics unpacks it and reads its YAML
        return
    d = _read_yaml(file, text)
    _check_keys(d, text, [s for s in splits if s not in ("train", "val")])
    for split in splits:
        for path in _split_paths(d, file, split, text):
            if not path.exists():
                if d.get("download"):
                    from ultralytics.utils import DATASETS_DIR
                    raise InputError(f"data={text}: the dataset is not on disk (ultralytics looked for {path}) and "
                                     f"{NO_DOWNLOAD} (its download: line is never run): put the dataset there "
                                     f"yourself (datasets folder {DATASETS_DIR}), or pass a data YAML of a local "
                                     f"dataset")
                raise InputError(f"data={text}: {split} images not found: no folder {path}: fix path:/{split}: in "
                                 f"the YAML")
            images = _images(path)
            first = next(images, None)
            if first is None:
                raise InputError(f"data={text}: no images in {path} ({split}): add images, or fix path:/{split}: in "
                                 f"the YAML")
            reason = _unusable(itertools.chain([first], images), d, task, single_cls)
            if reason:
                raise InputError(f"data={text}: none of the {split} images in {path} can be used (e.g. {reason}): "
                                 f"fix the images or labels, or the YAML's names")


# ---- source= ----------------------------------------------------------------------------------------------------
def _video_opens(path: str) -> bool:
    """OpenCV opens the video, reports frames and decodes the first one (FFmpeg's own complaint is discarded:
    the refusal names the file)."""
    import cv2
    try:
        import sys
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        if saved is not None:
            os.dup2(devnull, 2)
        cap = cv2.VideoCapture(path)
        try:
            return bool(cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0 and cap.read()[0])
        finally:
            cap.release()
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        os.close(devnull)


def check_source(source) -> None:
    """source= of predict (a path, folder, glob or .txt list; streams, URLs, screens and in-memory images are
    ultralytics' own): it exists, holds images or videos, and each can be opened."""
    import glob
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS
    if not isinstance(source, (str, Path)):
        return
    text = str(source).strip()
    if not text or text.isnumeric() or "://" in text or text.endswith(".streams") or text.startswith("screen"):
        return
    entries: Sequence[str] = [text]
    parent = None
    if Path(text).suffix.lower() == ".txt" and Path(text).is_file():
        parent = Path(text).parent
        entries = [p.strip() for p in Path(text).read_text(errors="ignore").splitlines() if p.strip()]
        if not entries:
            raise InputError(f"source={text} is an empty list: a .txt source lists image/video paths, one per line")
    files: List[str] = []
    for p in entries:
        a = str(Path(p).absolute())
        if parent is not None and not (glob.glob(a, recursive=True) if "*" in a else os.path.exists(a)):
            a = str((parent / p).absolute())
        if "*" in a:
            files += sorted(glob.glob(a, recursive=True))
        elif os.path.isdir(a):
            files += sorted(glob.glob(os.path.join(glob.escape(a), "*.*")))
        elif os.path.isfile(a):
            files.append(a)
        elif parent is not None:
            raise InputError(f"source={text}: {p} in this list does not exist: fix the list or pass the image, "
                             f"folder or video itself")
        else:
            raise InputError(f"source={text}: no such file or folder: pass an image, a video, a folder of them, a "
                             f"glob or a .txt list of their paths")
    media = [f for f in files if f.rpartition(".")[-1].lower() in IMG_FORMATS | VID_FORMATS]
    if not media:
        raise InputError(f"source={text} has no images or videos: pass an image, a video, a folder of them, a glob "
                         f"or a .txt list of their paths")
    checkable = {"bmp", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"}  # what PIL opens without plugins
    for f in media:
        suffix = f.rpartition(".")[-1].lower()
        if suffix in VID_FORMATS and not _video_opens(f):
            raise InputError(f"source={text}: video {f} cannot be read (corrupt, truncated or no frames): re-encode "
                             f"it or pass another file")
        if suffix in checkable and not _readable_image(f):
            raise InputError(f"source={text}: {f} cannot be read as an image: fix or remove it")


# ---- model= -----------------------------------------------------------------------------------------------------
def _model_formats() -> List[str]:
    from ultralytics.engine.exporter import export_formats
    return [*export_formats()["Suffix"], ".mlmodel", ".xml"]


def check_model_file(weights) -> None:
    """model= names a file (or exported-model folder) ultralytics can run, on disk: a .pt must be a torch archive;
    an ONNX file must parse. Weights are never fetched (ultralytics would download an asset name such as
    yolo11n.pt that is not on disk)."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.checks import check_model_file_from_stem
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES
    text = str(weights).strip()
    if text.lower().startswith(REMOTE):
        raise InputError(f"model={text} is a URL and {NO_DOWNLOAD} weights: download the file and pass its path")
    path = Path(str(check_model_file_from_stem(text)))
    if not path.exists():
        in_weights_dir = Path(SETTINGS["weights_dir"]) / path
        if in_weights_dir.exists():
            path = in_weights_dir
        elif path.name in GITHUB_ASSETS_NAMES:
            raise InputError(f"model={text} is not on disk (ultralytics looked in {Path.cwd()} and "
                             f"{SETTINGS['weights_dir']}) and {NO_DOWNLOAD} weights: put {path.name} there, or pass a "
                             f"local .pt or a model YAML such as yolo11n-c3k2-dattn.yaml")
        else:
            raise InputError(f"model={text}: no such file: pass a .pt checkpoint, an exported model or a model YAML")
    formats = _model_formats()
    name = path.name.lower()
    if path.is_dir():
        if not any(name.endswith(s.lower()) for s in formats if not s.startswith(".")) and \
                not name.endswith(".mlpackage"):
            raise InputError(f"model={text} is a folder: pass a .pt file or an exported model folder (such as "
                             f"best_openvino_model)")
        return
    if not any(s.lower() in name for s in formats):
        raise InputError(f"model={text}: {path.suffix or 'no suffix'} is not a model format ultralytics runs: pass a "
                         f"model YAML, a .pt, or an export ({', '.join(s for s in formats[1:5])}, ...)")
    if name.endswith(".pt"):
        with open(path, "rb") as fh:
            head = fh.read(len(LEGACY_MAGIC))
        if not (head.startswith(ZIP_MAGIC) or head == LEGACY_MAGIC):
            what = "empty" if not head else "not a PyTorch checkpoint (no torch archive)"
            raise InputError(f"model={text} is {what}: pass a .pt written by yolo train, or a model YAML")
        if head.startswith(ZIP_MAGIC):  # torch's archive is a zip: its directory at the end shows a cut-short file
            try:
                with zipfile.ZipFile(path) as z:
                    pickled = any(n.endswith("/data.pkl") for n in z.namelist())
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise InputError(f"model={text} is a damaged torch archive ({first_sentence(e)}): it was cut short "
                                 f"or altered; pass a complete .pt (last.pt / best.pt of a run)") from None
            if not pickled:
                raise InputError(f"model={text} is a zip file but not a PyTorch checkpoint (no data.pkl in it): pass "
                                 f"a .pt written by yolo train")
    elif name.endswith(".onnx"):
        try:
            import onnx
        except ImportError:
            return
        try:
            onnx.load_model(str(path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError and friends
            raise InputError(f"model={text} is not a valid ONNX model ({first_sentence(e) or type(e).__name__}): "
                             f"pass a file written by yolo export format=onnx") from None


def check_model_yaml(cfg) -> None:
    """model= of a model YAML that exists parses with yaml.safe_load into a mapping with backbone and head."""
    import yaml
    from ultralytics.utils.checks import check_yaml
    text = str(cfg)
    if text.lower().startswith(REMOTE):
        raise InputError(f"model={text} is a URL and {NO_DOWNLOAD} model YAMLs: download it and pass its path")
    try:
        file = Path(check_yaml(text, hard=False) or text)
    except (FileNotFoundError, ValueError):
        return  # ultralytics' own one-line refusal
    if not file.is_file():
        return  # ultralytics resolves scale-letter names (yolo11n.yaml -> yolo11.yaml) and refuses what is missing
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8", errors="ignore"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"model={text} is not valid YAML{where}: fix its syntax") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("backbone"), list) or \
            not isinstance(loaded.get("head"), list):
        raise InputError(f"model={text} is not a model YAML (it needs backbone: and head: lists of layers): pass a "
                         f"model YAML such as yolo11n-c3k2-dattn.yaml, or a .pt")


# ---- the run --------------------------------------------------------------------------------------------------
def _is_pytorch(owner) -> bool:
    from torch import nn
    model = getattr(owner, "model", None)
    return isinstance(model, nn.Module) or (isinstance(model, (str, Path)) and str(model).lower().endswith(".pt"))


def _saves(cfg: Mapping[str, Any]) -> bool:
    return any(bool(cfg.get(k)) for k in ("save", "save_txt", "save_crop", "save_frames"))


def check_run(owner, mode: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse (InputError) a run of `mode` ('train', 'val', 'predict', 'export') of the ultralytics Model `owner`
    with keywords `kwargs` whose input cannot work, before anything is created. A resumed training run continues
    with the arguments checked when it started and is not checked here."""
    args = run_args(owner, mode, kwargs)
    if mode == "train" and args.get("resume"):
        return
    if mode in ("train", "export") and not _is_pytorch(owner):
        raise InputError(f"model={owner.overrides.get('model', getattr(owner, 'model', ''))}: {mode} needs a PyTorch "
                         f"model (.pt or a model YAML); exported models only predict and val")
    cfg = check_args(args)
    check_numbers(cfg, mode)
    check_device(cfg.get("device"))
    if mode == "train":
        check_optimizer(cfg.get("optimizer"))
    if mode == "export":
        check_format(cfg.get("format"))
        from yolov5_dattn.edge_tools import edge_refusal  # a converter that is missing: before any work
        fmt = canonical_format(cfg.get("format"))
        reason = edge_refusal(fmt, "format=", cfg.get("quantize") == 8) or (
            coreml_refusal(cfg) if fmt == "coreml" else None)
        from torch import nn
        from yolov5_dattn.sparse_export import sparse_refusal  # sparse queries a target cannot run: before any work
        model = getattr(owner, "model", None)
        reason = (sparse_refusal(fmt, "format=", model, cfg.get("imgsz"),
                                 bool(cfg.get("dynamic")), engine_scale=2)
                  if isinstance(model, nn.Module) else None) or reason
        if reason:
            raise InputError(reason)
        if cfg.get("quantize") in (8, "w8a16") and fmt in ("openvino", "litert"):  # calibrated on the user's data
            if not cfg.get("data"):  # ultralytics would fall back to coco8.yaml, a download
                raise InputError(f"format={cfg.get('format')} quantize={cfg.get('quantize')} calibrates on your "
                                 f"images: pass data=<your data YAML> (its val images are used)")
            check_data(cfg.get("data"), str(cfg.get("task")), [str(cfg.get("split") or "val")],
                       bool(cfg.get("single_cls")))
        return
    if mode in ("train", "val") or (mode == "predict" and _saves(cfg)):
        check_project(cfg)
    split = str(cfg.get("split") or "val")
    if mode == "train":
        check_data(cfg.get("data"), str(cfg.get("task")), ["train", split], bool(cfg.get("single_cls")))
    elif mode == "val":
        check_data(cfg.get("data"), str(cfg.get("task")), [split], bool(cfg.get("single_cls")))
    else:
        check_source(kwargs.get("source"))


# ---- the seam ---------------------------------------------------------------------------------------------------
def _wrap(original, mode: str):
    if mode == "predict":
        @functools.wraps(original)
        def predict(self, source=None, stream=False, predictor=None, **kwargs):
            check_run(self, "predict", {**kwargs, "source": source})
            return original(self, source=source, stream=stream, predictor=predictor, **kwargs)
        return predict
    if mode == "val":
        @functools.wraps(original)
        def val(self, validator=None, **kwargs):
            if kwargs.get("data") is None and hasattr(self, "_val_data"):
                kwargs["data"] = self._val_data()  # what Model.val falls back to (the checkpoint's, else the task's)
            check_run(self, "val", kwargs)
            return original(self, validator=validator, **kwargs)
        return val
    if mode == "train":
        @functools.wraps(original)
        def train(self, trainer=None, **kwargs):
            check_run(self, "train", kwargs)
            return original(self, trainer=trainer, **kwargs)
        return train

    @functools.wraps(original)
    def export(self, **kwargs):
        check_run(self, "export", kwargs)
        return original(self, **kwargs)
    return export


def _load(original):
    @functools.wraps(original)
    def _load(self, weights, task=None):
        check_model_file(weights)
        try:
            return original(self, weights, task=task)
        except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError) as e:
            # torch's archive reader or unpickler failing inside a file that passed the archive check (damaged
            # inside); ultralytics' own refusals (TypeError, ModuleNotFoundError) and ours pass through unchanged
            if isinstance(e, RuntimeError) and "PytorchStreamReader" not in str(e):
                raise
            raise InputError(f"model={weights} cannot be loaded ({first_sentence(message(e)) or type(e).__name__}): "
                             f"pass a .pt written by yolo train") from None
    return _load


def _new(original):
    @functools.wraps(original)
    def _new(self, cfg, task=None, verbose=False):
        check_model_yaml(cfg)
        return original(self, cfg, task=task, verbose=verbose)
    return _new


def apply() -> None:
    """Install the checks on ultralytics' Model (idempotent; every change through `yolov5_dattn.patching`, step
    'input checks'). Applied after the feature-map checks, so these run first."""
    from ultralytics.engine.model import Model
    with patching.applying(STEP):
        for mode in ("train", "val", "predict", "export"):
            if not patching.is_patched(Model, mode, WHY):
                patching.patch(Model, mode, _wrap(Model.__dict__[mode], mode), why=WHY)
        for name, wrap in (("_load", _load), ("_new", _new)):
            if not patching.is_patched(Model, name, LOAD_WHY):
                patching.patch(Model, name, wrap(Model.__dict__[name]), why=LOAD_WHY)
