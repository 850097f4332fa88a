"""Ultralytics models for the analysis commands: a model YAML -> the model at its scale, the stock ultralytics
model it is compared against, and checkpoints loaded through ultralytics' own (restricted) loader.

ultralytics reads a model's scale from the file name (`yolo11n-c3k2-dattn.yaml` builds `yolo11-c3k2-dattn.yaml`
at scale n), so a model is named here by such a *spec*: a path whose name carries the scale, which need not
exist itself (`yaml_file` is the file read). The stock baseline of one of our configs is the YAML packaged with
ultralytics (`ultralytics/cfg/models/...`) whose layers are ours with each `<Block>_DAttention` put back to
`<Block>` (its fmapsize argument dropped), at the same scale: yolo11n-c3k2-dattn -> yolo11n.yaml,
yolov8s-seg-c2f-dattn -> yolov8s-seg.yaml, rtdetr-l-aifi-dattn -> rtdetr-l.yaml.

`python -m yolov5_dattn.hosts.ultralytics.baseline --cfg SPEC ... --shape B C H W` is the peak-memory worker of
`yolov5-dattn compare` for ultralytics models (one fresh process per model, as for YOLOv5's).
"""
import functools
import json
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from torch import nn

from yolov5_dattn.errors import UserError, first_sentence

# ultralytics' own rule (tasks.yaml_model_load): yolo11n-seg.yaml is yolo11-seg.yaml at scale n
_SCALED = re.compile(r"(\d+)([nslmx])(.+)?$")
SUFFIX = "_DAttention"


def models_dir() -> Path:
    """`ultralytics/cfg/models`: the model YAMLs packaged with ultralytics (11/yolo11.yaml, rt-detr/...)."""
    import ultralytics
    return Path(ultralytics.__file__).parent / "cfg" / "models"


def shipped_dir() -> Path:
    """Our ultralytics configs (`yolov5_dattn/configs/ultralytics`, also `configs/ultralytics` in a checkout)."""
    from yolov5_dattn.shipped import CONFIGS
    return CONFIGS / "ultralytics"


def unified(name: str) -> str:
    """A file name without its scale letter, as ultralytics reads it: 'yolo11n-seg.yaml' -> 'yolo11-seg.yaml'."""
    return _SCALED.sub(r"\1\3", name)


def scale_in_name(spec: Path) -> str:
    """The scale letter ultralytics takes from `spec`'s name ('yolo11n-c3k2-dattn' -> 'n'), '' if none."""
    from ultralytics.nn.tasks import guess_model_scale
    return guess_model_scale(spec)


def yaml_file(spec: Path) -> Optional[Path]:
    """The file ultralytics reads for `spec`: itself when it exists, else its scale-less name beside it."""
    spec = Path(spec)
    if spec.is_file():
        return spec
    plain = spec.with_name(unified(spec.name))
    return plain if plain.is_file() else None


@functools.lru_cache(maxsize=None)
def _packaged() -> Dict[str, Path]:
    """File name -> path of every model YAML packaged with ultralytics."""
    return {p.name: p for p in sorted(models_dir().rglob("*.yaml"))}


def resolve(cfg: str) -> Optional[Path]:
    """The spec of the ultralytics model `cfg` names, or None when it names none.

    `cfg` is a path (`configs/ultralytics/yolo11n-c3k2-dattn.yaml`: the scale-less file beside it is read), a
    file name of ours (`yolo11n-c3k2-dattn.yaml`) or of ultralytics' packaged models (`yolo11n.yaml`,
    `rtdetr-l.yaml`), with or without `.yaml`. The spec keeps the given name, so ultralytics reads the same scale.
    """
    path = Path(cfg)
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_name(path.name + ".yaml")
    if yaml_file(path) is not None:
        return path
    if len(path.parts) > 1:  # a path names one file only
        return None
    if yaml_file(shipped_dir() / path.name) is not None:
        return shipped_dir() / path.name
    packaged = _packaged()
    for name in (path.name, unified(path.name)):
        if name in packaged:
            return packaged[name].with_name(path.name)
    return None


def read_yaml(spec: Path, flag: str = "--cfg") -> dict:
    """The model dict of `spec` (yaml.safe_load of `yaml_file(spec)`). UserError when it is missing, unreadable
    or not a model YAML."""
    file = yaml_file(spec)
    if file is None:
        raise UserError(f"{flag} {spec}: no such file (nor {unified(Path(spec).name)} beside it): give the path "
                        f"of a model YAML")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{flag} {file}: not a readable YAML ({type(e).__name__}): fix or replace the file") from e
    if not isinstance(data, dict) or not isinstance(data.get("backbone"), list) or \
            not isinstance(data.get("head"), list):
        raise UserError(f"{flag} {file}: not an ultralytics model YAML (no backbone/head lists): give a model YAML "
                        f"such as configs/ultralytics/yolo11n-c3k2-dattn.yaml")
    return data


def model_scale(spec: Path, data: dict, flag: str = "--cfg") -> str:
    """The scale `spec` is built at: the letter in its name, else the YAML's only scale ('' without `scales:`).

    UserError for a letter the YAML's `scales` lacks, or no letter when it has several (ultralytics would
    silently take the first)."""
    scales = data.get("scales")
    letter = scale_in_name(spec)
    if not isinstance(scales, dict) or not scales:
        return letter
    names = ", ".join(map(str, scales))
    if letter and letter not in scales:
        raise UserError(f"{flag} {spec}: scale '{letter}' (from the file name) is not one of the YAML's scales "
                        f"({names}): name the file with one of them")
    if not letter:
        if len(scales) > 1:
            example = unified(Path(spec).name)
            match = re.search(r"\d+", example)
            hint = f", e.g. {example[:match.end()]}{next(iter(scales))}{example[match.end():]}" if match else ""
            raise UserError(f"{flag} {spec}: no scale letter in the file name and the YAML has several scales "
                            f"({names}): put the scale in the name as ultralytics does{hint}")
        letter = next(iter(scales))
    return letter


# ---- the stock baseline ----------------------------------------------------------------------------
def _is_fmapsize(arg) -> bool:
    """An `fmapsize` argument of our blocks: [h, w] or a mapping with q_size."""
    return (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, int) for v in arg)) or \
        (isinstance(arg, dict) and "q_size" in arg)


def stock_layers(data: dict) -> list:
    """The backbone + head of model dict `data` with every `<Block>_DAttention` put back to `<Block>` and its
    fmapsize argument dropped: the stock model it was derived from, layer for layer."""
    layers = []
    for layer in [*data["backbone"], *data["head"]]:
        if isinstance(layer, list) and len(layer) == 4 and isinstance(layer[2], str) and layer[2].endswith(SUFFIX):
            args = list(layer[3]) if isinstance(layer[3], list) else layer[3]
            if isinstance(args, list):
                found = next((i for i, a in enumerate(args) if i > 0 and _is_fmapsize(a)), None)
                if found is not None:
                    del args[found]
            layer = [layer[0], layer[1], layer[2][:-len(SUFFIX)], args]
        layers.append(layer)
    return layers


@functools.lru_cache(maxsize=None)
def _packaged_layers() -> List[Tuple[str, str]]:
    """(json of its layers, file name) of every packaged model YAML."""
    out = []
    for name, path in _packaged().items():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            out.append((json.dumps(data["backbone"] + data["head"]), name))
        except Exception:  # a packaged file we cannot read is no candidate
            continue
    return out


def with_scale(name: str, scale: str) -> str:
    """The name that selects `scale` of packaged YAML `name`: ('yolo11-seg.yaml', 'n') -> 'yolo11n-seg.yaml';
    the name itself when it carries its scale already or has none to add (rtdetr-l.yaml)."""
    if not scale or _SCALED.search(Path(name).stem):
        return name
    match = re.search(r"\d+", name)
    if not match:
        return name
    scaled = name[:match.end()] + scale + name[match.end():]
    return scaled if unified(scaled) == name else name


def _task(data: dict) -> Optional[str]:
    from ultralytics.nn.tasks import guess_model_task
    return "detect" if "RTDETRDecoder" in str(data.get("head")) else guess_model_task(data)


def stock_baseline(spec: Path, flag: str = "--cfg") -> Path:
    """The spec of the stock ultralytics model of `spec`'s family, scale and task (a packaged YAML).

    First the packaged YAML whose layers equal `stock_layers` of ours; else, by name, the longest prefix of
    `spec`'s name before a '-' that names a packaged model of the same task (yolo11n-mine -> yolo11n).
    UserError when neither finds one (pass --baseline)."""
    data = read_yaml(spec, flag)
    scale = model_scale(spec, data, flag)
    ours = json.dumps(stock_layers(data))
    packaged = _packaged()
    matches = [name for layers, name in _packaged_layers() if layers == ours]
    scaled = [name for name in matches if _SCALED.search(Path(name).stem)]
    if scaled:  # one file per scale (yolov10n.yaml, yolov9c.yaml): the one of our scale, else the first
        same = [n for n in scaled if scale_in_name(Path(n)) == scale]
        return packaged[(same or scaled)[0]]
    if matches:
        return packaged[matches[0]].with_name(with_scale(matches[0], scale))
    parts = Path(spec).stem.split("-")
    task = _task(data)
    for end in range(len(parts) - 1, 0, -1):
        candidate = resolve("-".join(parts[:end]) + ".yaml")
        if candidate is not None and candidate.parent != shipped_dir() and \
                _task(read_yaml(candidate, "--baseline")) == task:
            return candidate
    raise UserError(f"{flag} {spec}: no stock ultralytics model has its layers (without DAttention) or its name: "
                    f"pass --baseline, e.g. --baseline yolo11n.yaml")


# ---- building --------------------------------------------------------------------------------------
def _flat(output) -> List[torch.Tensor]:
    """Every tensor in a model output of nested dicts, lists and tuples, in order."""
    if torch.is_tensor(output):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for o in output for t in _flat(o)]
    return []


class Measured(nn.Module):
    """An ultralytics model for the measurements: the same layers under the same names ('model.8.m.0.attention'),
    the same parameters, but a forward that returns a flat tuple of every output tensor (ultralytics returns
    dicts in training mode, which the surrogate losses of `analysis` do not read).

    Shapes: (B, 3, H, W) -> tuple of tensors. `host` is the ultralytics model (not a submodule).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.__dict__["host"] = model  # plain attribute: its only child is `model`, registered below
        self.model = model.model

    @property
    def stride(self) -> torch.Tensor:
        """The host model's strides (8, 16, 32)."""
        return self.host.stride

    @property
    def yaml(self) -> dict:
        """The host model's dict (its `ch` is the input channel count)."""
        return self.host.yaml

    def _apply(self, fn, recurse=True):
        self.host._apply(fn)  # ultralytics moves its heads' stride/anchor tensors there too
        return self

    def train(self, mode: bool = True):
        """Training or eval mode for the host model and its layers."""
        self.host.train(mode)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> every tensor the host model returns, flattened."""
        return tuple(_flat(self.host(x)))


def model_class(data: dict):
    """The ultralytics model class that builds model dict `data` (detection, segmentation, pose, OBB, RT-DETR)."""
    from ultralytics.nn import tasks
    if "RTDETRDecoder" in str(data.get("head")):
        return tasks.RTDETRDetectionModel
    classes = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
               "obb": tasks.OBBModel, "classify": tasks.ClassificationModel}
    task = _task(data)
    if task not in classes:
        raise ValueError(f"cannot tell the task of this model (its last layer is {data['head'][-1][2]}): give a "
                        f"detection, segmentation, pose, OBB or RT-DETR YAML")
    return classes[task]


def build_model(spec, nc: Optional[int] = None, seed: int = 0) -> Measured:
    """The ultralytics model of `spec` at its scale, seeded, quiet, on CPU in training mode, as `Measured`.

    Args: spec (a path whose name carries the scale, see the module docstring); nc classes (None: the YAML's).
    """
    from ultralytics.nn.tasks import yaml_model_load
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (our blocks registered)

    spec = Path(spec)
    data = read_yaml(spec)
    scale = model_scale(spec, data)
    d = yaml_model_load(spec)
    d["scale"] = scale  # the letter of the name, or the only scale (no 'Assuming scale' warning)
    torch.manual_seed(seed)
    return Measured(model_class(d)(d, ch=3, nc=nc, verbose=False))


# ---- peak memory, in fresh processes ---------------------------------------------------------------
def start_memory_worker(cfgs: Sequence[Path], ncs: Sequence[Optional[int]], input_shape: Sequence[int]):
    """`profiling.start_memory_worker` for ultralytics specs: each model built by `build_model` and measured by
    `profiling.measure_peaks` in its own fresh process (`python -m yolov5_dattn.hosts.ultralytics.baseline`).
    Returns the handle for `profiling.collect_memory_worker`."""
    from yolov5_dattn.analysis import profiling
    return profiling.start_memory_worker([str(c) for c in cfgs], ncs, input_shape,
                                         module="yolov5_dattn.hosts.ultralytics.baseline")


# ---- checkpoints -----------------------------------------------------------------------------------
def load_checkpoint(weights, trust: bool = False, flag: str = "--weights") -> nn.Module:
    """The model of an ultralytics checkpoint ('ema' else 'model'), float, eval, on CPU.

    Loaded by ultralytics' own `load_checkpoint` with the restricted (weights-only, allowlisted) loading that
    `yolov5_dattn.hosts.ultralytics` makes the default; `trust` lifts the restriction for this load only (full pickle:
    only for a file whose source the user trusts). UserError (one line naming the file) when it is missing or
    refused."""
    import ultralytics.nn.tasks as tasks

    from yolov5_dattn.core.trust import trust_checkpoints
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{flag} {weights}: no such file: pass a .pt written by `yolov5-dattn yolo train`")
    unsafe = trust_checkpoints() if trust else nullcontext()  # refused files load with full pickle
    from .checkpoints import CheckpointRefused
    try:
        with unsafe:
            model, _ = tasks.load_checkpoint(str(path), device="cpu")
    except CheckpointRefused as e:  # names the file already; the flag and the advice go first
        reason = str(e).split(" was not loaded: ", 1)[-1]
        raise UserError(f"{flag} {weights}: not loaded: {reason}") from None
    except (TypeError, ModuleNotFoundError, KeyError, AttributeError, RuntimeError, OSError) as e:
        reason = re.sub(r"^ERROR\s*\S*\s*", "", first_sentence(e)) or type(e).__name__
        advice = "" if trust else ": pass --trust-checkpoint only if you trust where it came from"
        raise UserError(f"{flag} {weights}: not loaded ({reason}){advice}") from None
    return model.float().eval()


if __name__ == "__main__":
    from yolov5_dattn.analysis.profiling import memory_worker
    memory_worker(build_model, "ultralytics")
