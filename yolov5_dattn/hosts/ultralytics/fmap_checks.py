"""Feature-map checks for ultralytics runs, made before any work: every DAttention fits the sizes the run feeds it.

The seam is `ultralytics.engine.model.Model.train`, `.val`, `.predict` and `.export` (so also `track`, `model(source)` and
the `yolo` command, whose entry point calls them). They are the earliest point that knows both the model
(`self.model`, built from the YAML or loaded from the .pt by `YOLO(...)`) and the run's arguments, and they run
before ultralytics constructs its trainer / validator / predictor: the trainer and the validator create
`runs/<task>/<name>` in their `__init__` (get_save_dir + mkdir), before any data is read. A refusal there is a
`FeatureMapError` (a `UserError`): one line, `error: ...` and exit status 2 from `yolov5-dattn yolo`.

For each DAttention (found in the built model, its stride measured by one probe forward, `yolov5_dattn.nn.sites`)
the check works out the maps the run will give it, by ultralytics 8.4.190's rules:

- training batches are `imgsz` square, imgsz rounded up to a multiple of the max stride gs (`check_imgsz`,
  floor gs); `rect=True` batches: long side imgsz, short side by aspect (pad 0);
- `multi_scale=f` (a fraction): square sides from max(gs, imgsz·(1-f)) to imgsz·(1+f) + gs, rounded down to gs;
- validation (each epoch, and `mode=val`'s default `rect=True`) uses rectangular batches padded by half a stride
  (build_yolo_dataset pad 0.5): the long side is ceil(imgsz/gs + 0.5)·gs, one stride beyond imgsz;
- prediction letterboxes to `imgsz` (one value: square; two: [h, w]), padding only to a stride multiple while
  `rect=True` (the default for PyTorch models), to exactly imgsz otherwise;
- RT-DETR validates and predicts at exactly imgsz and never uses rectangular batches;
- export traces at imgsz (default: the imgsz the checkpoint was trained at), rounded up to the stride; with
  `dynamic=True` the exported graph takes any multiple of the stride.

What it does with them is `yolov5_dattn.core.fmap_plan`, the rules and messages the YOLOv5 host uses too, here
in ultralytics' words (`imgsz=640`, `rect=True`, `multi_scale=0.5`): a line per DAttention saying what it will see
(printed once per model), refusals (a fixed_pe layer at another size, maps too small for the layer), and what a
fixed_pe layer needs changed, which the seam applies to the call's keywords (`run_overrides`): `rect` and
`multi_scale` off, and square inputs of exactly imgsz: `rect=False` for val and predict, and for the epoch-end
validation of a training run `build_yolo_dataset` (as `ultralytics.models.yolo.detect.train` sees it), patched to
pass `rect=False` while such a run is in progress.

Under our commands' policy, training also reads its `pretrained=` file first (`pretrained_check`), for the same
reason.

A resumed run (`resume=`) is not checked again: it continues with the arguments checked when it started.
"""
import ast
import contextvars
import functools
import math
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from torch import nn

from yolov5_dattn import patching
from yolov5_dattn.core import fmap_plan
from yolov5_dattn.core.fmap_plan import MODES, FeatureMapError, Plan, Verdict, multiscale_range
from yolov5_dattn.nn.sites import AttentionSite, find_attention, grid_size, rect_val_long_side
from .pretrained_check import check_pretrained

__all__ = ["FLAGS", "FeatureMapError", "MODES", "Plan", "Verdict", "apply", "attention_sites", "check_plan",
           "check_run", "make_plan", "multiscale_range", "parse_imgsz", "rect_val_long_side", "rounded_hw",
           "run_overrides", "square_validation"]

FLAGS = fmap_plan.ULTRALYTICS_FLAGS
OFF = {"rect": False, "multi_scale": 0.0}  # an option a fixed_pe layer cannot follow, switched off
STEP = "fmap checks"
WHY = "every DAttention is checked against the feature maps of the run's imgsz before any work (fixed_pe, size)"
SQUARE_WHY = "validation during a fixed_pe training run uses square imgsz batches (inert otherwise)"
PREFIX = "yolov5-dattn: "

_square_val: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_square_val", default=False)
_sites: "weakref.WeakKeyDictionary[nn.Module, List[AttentionSite]]" = weakref.WeakKeyDictionary()
_said: "weakref.WeakKeyDictionary[nn.Module, Set[str]]" = weakref.WeakKeyDictionary()


# ---- sizes ---------------------------------------------------------------------------------------------
def parse_imgsz(value: Any) -> Optional[List[int]]:
    """`imgsz` as ultralytics' check_imgsz reads it (640, [640, 480], '640', '[640,480]', '640,480'); None
    for a value it would refuse itself (ultralytics then reports it)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if text.isnumeric() else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return [int(v) for v in value]


def rounded_hw(sizes: Sequence[int], gs: int, mode: str) -> Optional[Tuple[int, int]]:
    """(h, w) ultralytics feeds for imgsz `sizes`: train/val take one side (the largest of a list), square;
    predict one (square) or two values; each rounded up to a multiple of gs, at least gs. None for more
    than two values in predict (ultralytics refuses them)."""
    def up(x: int) -> int:
        return max(math.ceil(x / gs) * gs, gs)
    if mode in ("train", "val") or len(sizes) == 1:
        side = up(max(sizes))
        return side, side
    if len(sizes) == 2:
        return up(sizes[0]), up(sizes[1])
    return None


def check_plan(sites: Sequence[AttentionSite], plan: Plan) -> Verdict:
    """`yolov5_dattn.core.fmap_plan.check_plan` in ultralytics' words (`imgsz=`, `rect=True`); raises
    FeatureMapError (one line) for the first refusal."""
    return fmap_plan.check_plan(sites, plan, FLAGS).accept()


def run_overrides(verdict: Verdict, mode: str) -> Dict[str, Any]:
    """The keyword changes `Model.<mode>` makes for `verdict`: the options a fixed_pe layer cannot follow, off;
    and rect=False where square inputs are asked for in val / predict (training gets `square_validation`)."""
    overrides = {key: OFF[key] for key in verdict.switch_off}
    if verdict.square and mode in ("val", "predict"):
        overrides["rect"] = False
    return overrides


def attention_sites(model: nn.Module) -> List[AttentionSite]:
    """The DAttention sites of `model` (one probe forward the first time; cached per model object)."""
    sites = _sites.get(model)
    if sites is None:
        sites = _sites[model] = find_attention(model)
    return sites


def _is_rtdetr(model: nn.Module) -> bool:
    from ultralytics.nn.tasks import RTDETRDetectionModel
    return isinstance(model, RTDETRDetectionModel)


def make_plan(model: nn.Module, mode: str, args: Mapping[str, Any], checkpoint: bool = False) -> Optional[Plan]:
    """The Plan of a run of `mode` with the merged arguments `args` (ultralytics' defaults, the model's
    overrides, the method's defaults and the call's keywords, in that order); None when the imgsz is one
    ultralytics refuses itself."""
    gs = grid_size(model)
    sizes = parse_imgsz(args.get("imgsz", 640))
    hw = rounded_hw(sizes, gs, mode) if sizes else None
    if hw is None:
        return None
    try:
        multi_scale = float(args.get("multi_scale") or 0.0) if mode == "train" else 0.0
    except (TypeError, ValueError):
        multi_scale = 0.0  # ultralytics' own cfg check refuses it
    return Plan(mode=mode, given=sizes, hw=hw, gs=gs,
                rect=bool(args.get("rect", False)) and mode != "export",
                multi_scale=multi_scale, validates=mode == "val" or (mode == "train" and bool(args.get("val", True))),
                square_eval=_is_rtdetr(model), checkpoint=checkpoint,
                dynamic=mode == "export" and bool(args.get("dynamic", False)))


def check_run(model: nn.Module, mode: str, args: Mapping[str, Any], checkpoint: bool = False) -> Verdict:
    """Check a run of `mode` ('train', 'val', 'predict', 'export') of `model` with merged arguments `args`, print what each
    DAttention will see (once per model), and return the Verdict. Raises FeatureMapError."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    sites = attention_sites(model)
    if not sites:
        return Verdict()
    plan = make_plan(model, mode, args, checkpoint)
    if plan is None:
        return Verdict()
    verdict = check_plan(sites, plan)
    _say(model, verdict.lines)
    return verdict


def _say(model: nn.Module, lines: Sequence[str]) -> None:
    """Log each line once per model (a loop of `model.predict(frame)` would repeat them), on the main process."""
    from ultralytics.utils import LOGGER, RANK
    if RANK not in {-1, 0}:
        return
    said = _said.setdefault(model, set())
    for line in lines:
        if line not in said:
            said.add(line)
            LOGGER.info(PREFIX + line)


def square_validation(on: Optional[bool] = None) -> bool:
    """Whether validation here is square (a fixed_pe training run in progress). `on` sets it for the rest of the
    current context: a DDP worker, whose whole run is that training run (`yolov5_dattn.hosts.ultralytics.ddp`)."""
    if on is not None:
        _square_val.set(bool(on))
    return _square_val.get()


# ---- the seam: Model.train / val / predict / export ----------------------------------------------------
def _defaults() -> Dict[str, Any]:
    from ultralytics.cfg import DEFAULT_CFG_DICT
    return dict(DEFAULT_CFG_DICT)


def _checked(owner, mode: str, kwargs: Dict[str, Any]) -> Optional[Verdict]:
    """The Verdict for `owner.<mode>(**kwargs)` (owner: an ultralytics Model), None when there is nothing to check
    (no PyTorch model, a resumed run)."""
    model = getattr(owner, "model", None)
    if not isinstance(model, nn.Module):
        return None  # an exported model (ONNX, ...): no DAttention modules to inspect
    if mode == "train":
        if kwargs.get("cfg"):
            from ultralytics.utils import YAML
            from ultralytics.utils.checks import check_yaml
            overrides = YAML.load(check_yaml(kwargs["cfg"]))
        else:
            overrides = owner.overrides
        args = {**_defaults(), **overrides, **kwargs}
        if args.get("resume"):
            return None
        from yolov5_dattn.hosts.ultralytics import policy_applied
        if policy_applied():  # our commands: a bad pretrained= would fail after the trainer made the run folder
            check_pretrained(args)
    elif mode == "export":  # Model.export's own defaults: the imgsz the model was trained at
        args = {**_defaults(), **owner.overrides, "imgsz": getattr(model, "args", {}).get("imgsz", 640), **kwargs}
    else:  # both methods default to rect=True (Model.val / Model.predict `custom`)
        args = {**_defaults(), **owner.overrides, "rect": True, **kwargs}
    return check_run(model, mode, args, checkpoint=bool(getattr(owner, "ckpt", None)))


def _train(original):
    @functools.wraps(original)
    def train(self, trainer=None, **kwargs):
        verdict = _checked(self, "train", kwargs)
        if verdict is None:
            return original(self, trainer=trainer, **kwargs)
        kwargs.update(run_overrides(verdict, "train"))
        token = _square_val.set(verdict.square)  # the epoch-end validation: square batches
        try:
            return original(self, trainer=trainer, **kwargs)
        finally:
            _square_val.reset(token)
    return train


def _val(original):
    @functools.wraps(original)
    def val(self, validator=None, **kwargs):
        verdict = _checked(self, "val", kwargs)
        if verdict is not None:
            kwargs.update(run_overrides(verdict, "val"))
        return original(self, validator=validator, **kwargs)
    return val


def _predict(original):
    @functools.wraps(original)
    def predict(self, source=None, stream=False, predictor=None, **kwargs):
        verdict = _checked(self, "predict", kwargs)
        if verdict is not None:
            kwargs.update(run_overrides(verdict, "predict"))
        return original(self, source=source, stream=stream, predictor=predictor, **kwargs)
    return predict


def _export(original):
    @functools.wraps(original)
    def export(self, **kwargs):
        _checked(self, "export", kwargs)  # refuses only; an export changes no argument
        return original(self, **kwargs)
    return export


def _square_val_dataset(original):
    @functools.wraps(original)
    def build_yolo_dataset(cfg, img_path, batch, data, mode="train", rect=False, *args, **kwargs):
        if _square_val.get() and mode != "train":
            rect = False  # cfg.rect is off too: the check switched it off for this fixed_pe run
        return original(cfg, img_path, batch, data, mode, rect, *args, **kwargs)
    return build_yolo_dataset


def apply() -> None:
    """Install the checks on ultralytics' Model methods and the square validation of fixed_pe training runs
    (idempotent; every change through `yolov5_dattn.patching`, step 'fmap checks')."""
    from ultralytics.engine.model import Model
    from ultralytics.models.yolo.detect import train as detect_train
    with patching.applying(STEP):
        for name, wrap in (("train", _train), ("val", _val), ("predict", _predict), ("export", _export)):
            if not patching.is_patched(Model, name, WHY):
                patching.patch(Model, name, wrap(vars(Model)[name]), why=WHY)
        if not patching.is_patched(detect_train, "build_yolo_dataset", SQUARE_WHY):
            patching.patch(detect_train, "build_yolo_dataset", _square_val_dataset(detect_train.build_yolo_dataset),
                           why=SQUARE_WHY)
