"""The YAMLs shipped inside the package (`yolov5_dattn/configs/`, also `configs/` in a checkout), by bare name.

A pip user has no checkout, so `--cfg yolov5l_c3_dattn.yaml`, `--cfg segment/yolov5n-seg_c3_dattn.yaml` (or just
`yolov5n-seg_c3_dattn.yaml`), `--data demo_shapes.yaml` and `--hyp hyp.demo.yaml` name the shipped files.
An existing path always wins; a name that is neither is returned unchanged, so YOLOv5's own lookups
(`--cfg yolov5n.yaml` from its package) and its error messages still apply.
"""
import functools
import os
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Union

import yaml

CONFIGS = Path(__file__).resolve().parent / "configs"
KINDS = ("cfg", "data", "hyp")  # model YAML, dataset YAML, hyperparameter YAML; also YOLOv5's option names
ULTRALYTICS = "ultralytics-model"  # a model YAML of the ultralytics package (`scales:`), for `yolov5-dattn yolo`


def kind_of(path: Path) -> Optional[str]:
    """'cfg', 'data' or 'hyp' from a YAML's keys (backbone/head, names, lr0), `ULTRALYTICS` for an ultralytics
    model YAML (backbone/head with `scales:`, which YOLOv5 cannot build); None when it is none of them."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if "backbone" in data and "head" in data:
        return ULTRALYTICS if "scales" in data else "cfg"
    if "names" in data:
        return "data"
    if "lr0" in data:
        return "hyp"
    return None


@functools.lru_cache(maxsize=None)
def _catalogue() -> Dict[str, str]:
    """{'segment/yolov5n-seg_c3_dattn.yaml': 'cfg', ...}: every shipped YAML (POSIX path under configs/) and
    its kind."""
    names = sorted((p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.y*ml")),
                   key=lambda n: (n.count("/"), n))  # top-level (detection) first, then segment/
    return {name: kind_of(CONFIGS / name) for name in names}


def list_configs(kind: Optional[str] = None) -> List[str]:
    """The shipped YAMLs as names relative to the configs folder ('yolov5n_c3_dattn.yaml',
    'segment/demo_shapes-seg.yaml'), top-level first, each sorted; only those of `kind` ('cfg', 'data', 'hyp')
    when given (or `ULTRALYTICS`: the ultralytics model YAMLs)."""
    if kind is not None and kind not in (*KINDS, ULTRALYTICS):
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return [name for name, k in _catalogue().items() if kind is None or k == kind]


def resolve(name: Union[str, Path, None], kind: str) -> Union[str, Path, None]:
    """The path of the shipped `kind` YAML called `name`, or `name` itself.

    `name` is returned unchanged when it is empty, an existing path (a path always wins), a URL, or no
    shipped YAML of that kind. Otherwise it may be a path under configs/ ('segment/x.yaml'), a bare file
    name found in any sub-folder ('x.yaml'), either without '.yaml'.
    """
    if name is None or str(name) == "" or "://" in str(name) or Path(name).exists():
        return name
    wanted = PurePosixPath(str(name).replace(os.sep, "/"))
    if wanted.suffix not in (".yaml", ".yml"):
        wanted = wanted.with_name(wanted.name + ".yaml")
    names = list_configs(kind)
    if wanted.as_posix() in names:
        return str(CONFIGS / wanted)
    if len(wanted.parts) == 1:
        matches = [n for n in names if PurePosixPath(n).name == wanted.name]
        if len(matches) == 1:
            return str(CONFIGS / matches[0])
    return name


def resolve_options(opt) -> None:
    """Replace, in YOLOv5's parsed namespace `opt`, each --cfg/--data/--hyp value that names a shipped YAML
    by that YAML's path (in place; options the task does not have are skipped)."""
    for kind in KINDS:
        if isinstance(getattr(opt, kind, None), (str, Path)):
            setattr(opt, kind, resolve(getattr(opt, kind), kind))


def relative(path: Union[str, Path]) -> Optional[PurePosixPath]:
    """`path`'s place under the shipped configs folder ('segment/demo_shapes-seg.yaml'), None if outside it."""
    try:
        return PurePosixPath(Path(path).resolve().relative_to(CONFIGS).as_posix())
    except (OSError, ValueError):
        return None


def install() -> None:
    """Let YOLOv5's `Model(...)` (DetectionModel, and SegmentationModel through it) take a shipped name:
    `Model("yolov5n_c3_dattn.yaml")`. A path that exists, a dict, or an unknown name reach YOLOv5 unchanged.
    Idempotent."""
    from yolov5.models import yolo

    from yolov5_dattn import patching
    init = yolo.DetectionModel.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if args and isinstance(args[0], (str, Path)):
            args = (resolve(args[0], "cfg"), *args[1:])
        elif isinstance(kwargs.get("cfg"), (str, Path)):
            kwargs["cfg"] = resolve(kwargs["cfg"], "cfg")
        init(self, *args, **kwargs)

    patching.patch(yolo.DetectionModel, "__init__", __init__, why="Model(<shipped name>) builds the shipped YAML")
