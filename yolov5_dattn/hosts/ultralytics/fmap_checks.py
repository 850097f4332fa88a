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

What it does with them mirrors the YOLOv5 host (`yolov5_dattn.hosts.yolov5.preflight`):

- size-free position terms (dwc_pe, the default; log_cpb; the interpolated table): one line per layer saying
  what it will see (printed once per model);
- `fixed_pe` (its parameters only fit the declared q_size): a run whose imgsz gives another map is refused,
  naming the right imgsz and the q_size that would fit; `rect=True` and `multi_scale`, which it cannot follow,
  are switched off with a message; an export with `dynamic=True` is refused; validation and prediction get square inputs of exactly imgsz (the
  epoch-end validation through `build_yolo_dataset` as `ultralytics.models.yolo.detect.train` sees it,
  patched to pass `rect=False` while such a run is in progress);
- a map smaller than the layer's offset network accepts (its conv kernel with no padding, `no_off`'s
  pooling) is refused, and so is training on a 1×1 map: over a single cell every query has one key (attention
  weight 1) and no gradient reaches the sampling offsets.

Under our commands' policy, training also reads its `pretrained=` file first (`pretrained_check`), for the same
reason.

A resumed run (`resume=`) is not checked again: it continues with the arguments checked when it started.
"""
import ast
import contextvars
import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from torch import nn

from yolov5_dattn import patching
from yolov5_dattn.errors import UserError
from yolov5_dattn.nn.sites import AttentionSite, find_attention, fmt, grid_size, rect_val_long_side
from .pretrained_check import check_pretrained

MODES = ("train", "val", "predict", "export")
STEP = "fmap checks"
WHY = "every DAttention is checked against the feature maps of the run's imgsz before any work (fixed_pe, size)"
SQUARE_WHY = "validation during a fixed_pe training run uses square imgsz batches (inert otherwise)"
PREFIX = "yolov5-dattn: "

_square_val: contextvars.ContextVar = contextvars.ContextVar("yolov5_dattn_square_val", default=False)
_sites: "weakref.WeakKeyDictionary[nn.Module, List[AttentionSite]]" = weakref.WeakKeyDictionary()
_said: "weakref.WeakKeyDictionary[nn.Module, Set[str]]" = weakref.WeakKeyDictionary()


class FeatureMapError(UserError):
    """A DAttention cannot take the feature maps this run would feed it (the message says what to change)."""


@dataclass
class Plan:
    """The inputs one ultralytics run will feed the model.

    mode: 'train', 'val', 'predict' or 'export'; given: the imgsz as the user gave it; hw: (h, w) after ultralytics'
    rounding; gs: the max stride; rect / multi_scale / validates as the run's arguments; square_eval: RT-DETR
    (validation and prediction always at exactly imgsz); checkpoint: the model came from a .pt (its q_size
    cannot be changed by the user); dynamic: an export with dynamic input sizes.
    """

    mode: str
    given: Any
    hw: Tuple[int, int]
    gs: int
    rect: bool = False
    multi_scale: float = 0.0
    validates: bool = False
    square_eval: bool = False
    checkpoint: bool = False
    dynamic: bool = False


@dataclass
class Verdict:
    """What the check decided: lines to print, arguments to change (fixed_pe), square validation on/off."""

    lines: List[str] = field(default_factory=list)
    overrides: Dict[str, Any] = field(default_factory=dict)
    square_val: bool = False


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


def multiscale_range(side: int, gs: int, fraction: float) -> Tuple[int, int]:
    """Smallest and largest square side `multi_scale=fraction` picks (DetectionTrainer.preprocess_batch:
    randrange(max(gs, side·(1-f)), side·(1+f) + gs) // gs · gs)."""
    low = max(gs, int(side * (1.0 - fraction))) // gs * gs
    high = (int(side * (1.0 + fraction) + gs) - 1) // gs * gs
    return low, max(high, low)


def _hw_text(hw: Sequence[int]) -> str:
    return f"{int(hw[0])}x{int(hw[1])}"


def _imgsz_arg(hw: Sequence[int]) -> str:
    """`imgsz=...` as a user would write it for (h, w)."""
    return f"imgsz={hw[0]}" if hw[0] == hw[1] else f"imgsz=[{hw[0]}, {hw[1]}]"


def _given_text(plan: Plan) -> str:
    """The imgsz the user gave, and what ultralytics rounds it to when that differs ('imgsz=150 (rounded to 160)')."""
    sizes = parse_imgsz(plan.given) or [plan.hw[0]]
    shown = f"imgsz={sizes[0]}" if len(sizes) == 1 else f"imgsz={sizes}"
    as_hw = sizes * 2 if len(sizes) == 1 else sizes[:2]
    if tuple(as_hw) != tuple(plan.hw):
        shown += f" (rounded to {_imgsz_arg(plan.hw).split('=', 1)[1]})"
    return shown


def _at_least(cells: int, site: AttentionSite, gs: int) -> int:
    """The smallest imgsz (a multiple of gs) whose map at `site` has `cells` cells per side."""
    return max(math.ceil(cells * site.stride / gs) * gs, gs)


# ---- the check ----------------------------------------------------------------------------------------------
def _refuse_small(site: AttentionSite, plan: Plan) -> None:
    """FeatureMapError when a map the run feeds `site` is smaller than it can take (see the module docstring)."""
    least = site.smallest_side
    side = min(site.fmap(plan.hw))
    what = (f"its offset network (kernel {site.module.ksize}, stride {site.module.stride})" if not site.module.no_off
            else f"its key pooling (stride {site.module.stride})")
    if side < least:
        raise FeatureMapError(
            f"{site.name} ({site.variant}) needs a feature map of at least {least}x{least} ({what}) but "
            f"{_given_text(plan)} gives {_hw_text(site.fmap(plan.hw))}: use imgsz={_at_least(least, site, plan.gs)} "
            f"or more")
    if plan.mode == "train" and side < 2:
        raise FeatureMapError(
            f"{site.name} ({site.variant}) would train on a {_hw_text(site.fmap(plan.hw))} map at {_given_text(plan)}: "
            f"over a single cell every query has one key (attention weight 1) and no gradient reaches the sampling "
            f"offsets; use imgsz={_at_least(2, site, plan.gs)} or more")
    if plan.mode == "train" and plan.multi_scale > 0 and not site.size_fixed:  # fixed_pe: switched off instead
        low, _ = multiscale_range(plan.hw[0], plan.gs, plan.multi_scale)
        if min(site.fmap([low, low])) < least:
            raise FeatureMapError(
                f"multi_scale={plan.multi_scale} goes down to {low}x{low} inputs, which give {site.name} "
                f"{_hw_text(site.fmap([low, low]))}, below the {least}x{least} {what} needs: use a smaller "
                f"multi_scale or a larger imgsz")


def _describe(site: AttentionSite, plan: Plan) -> str:
    """What a size-free `site` will see in this run (one line)."""
    s, hw = site.stride, plan.hw
    parts = []
    if plan.mode == "val" and plan.rect and not plan.square_eval:
        pass  # validation batches are rectangles, said below
    elif plan.mode == "predict" and plan.rect and not plan.square_eval:
        parts.append(f"{_imgsz_arg(hw)} -> up to {fmt(site.fmap(hw))} (letterboxed, short side by aspect)")
    else:
        parts.append(f"{_imgsz_arg(hw)} -> {fmt(site.fmap(hw))}")
    if plan.mode == "export" and plan.dynamic:
        parts.append("dynamic=True: any multiple of the stride")
    if plan.mode == "train":
        if plan.rect and not plan.square_eval:
            parts.append(f"rect: long side {max(site.fmap(hw))}, short side by aspect")
        if plan.multi_scale > 0:
            low, high = multiscale_range(hw[0], plan.gs, plan.multi_scale)
            parts.append(f"multi_scale={plan.multi_scale} {fmt(site.fmap([low, low]))}.."
                         f"{fmt(site.fmap([high, high]))}")
    if plan.validates and not plan.square_eval and (plan.mode == "train" or plan.rect):
        long = rect_val_long_side(hw[0], plan.gs)
        parts.append(f"validation (rectangular, padded): long side {math.ceil(long / s)}, short side by aspect")
    return "; ".join(parts)


def _enforce(site: AttentionSite, plan: Plan, verdict: Verdict, said: Set[str]) -> None:
    """For a fixed_pe `site`: refuse an imgsz whose map is not the declared one; switch off what it cannot
    follow (rect, multi_scale) and ask for square validation / letterboxing (notes added to `verdict`)."""
    declared, got = tuple(site.declared), site.fmap(plan.hw)
    need = site.input_for(declared)
    square_only = plan.mode in ("train", "val")
    if plan.mode == "export" and plan.dynamic:
        raise FeatureMapError(f"dynamic=True: {site.name} uses fixed_pe and only runs at {_hw_text(declared)} "
                              f"({_imgsz_arg(need)}): drop dynamic=True or use a size-free position term (dwc_pe) "
                              f"in the model YAML's fmapsize")
    if got != declared:
        if square_only and declared[0] != declared[1]:
            fix = (f"set a square q_size such as {fmt(got)} in the model YAML's fmapsize ({plan.mode} batches are "
                   f"square)")
        elif plan.checkpoint:
            fix = f"use {_imgsz_arg(need)}: the size its fixed_pe table was built for"
        else:
            fix = f"use {_imgsz_arg(need)} or set q_size {fmt(got)} in the model YAML's fmapsize"
        raise FeatureMapError(f"{site.name} (fixed_pe) is declared for {_hw_text(declared)} ({_imgsz_arg(need)}) "
                              f"but {_given_text(plan)} gives {_hw_text(got)}: {fix}")
    fixed = f"{site.name} uses fixed_pe {fmt(declared)}"
    if plan.mode == "train" and plan.rect and not plan.square_eval and "rect" not in said:
        said.add("rect")
        verdict.overrides["rect"] = False
        verdict.lines.append(f"rect=True switched off: {fixed}, rectangular batches would give other sizes")
    if plan.mode == "train" and plan.multi_scale > 0 and "multi_scale" not in said:
        said.add("multi_scale")
        verdict.overrides["multi_scale"] = 0.0
        low, high = multiscale_range(plan.hw[0], plan.gs, plan.multi_scale)
        verdict.lines.append(f"multi_scale={plan.multi_scale} switched off: {fixed}, multi-scale would give "
                             f"{fmt(site.fmap([low, low]))}..{fmt(site.fmap([high, high]))}")
    rect_val = plan.validates and not plan.square_eval and (plan.mode == "train" or plan.rect)
    if rect_val and "val" not in said:
        said.add("val")
        if plan.mode == "train":
            verdict.square_val = True
        else:
            verdict.overrides["rect"] = False
        long = rect_val_long_side(plan.hw[0], plan.gs)
        verdict.lines.append(f"validation uses square {_hw_text(plan.hw)} inputs instead of ultralytics' "
                             f"rectangular batches (long side {long}): {fixed}")
    if plan.mode == "predict" and plan.rect and not plan.square_eval and "predict" not in said:
        said.add("predict")
        verdict.overrides["rect"] = False
        verdict.lines.append(f"inference letterboxes every image to exactly {_hw_text(plan.hw)} (not the minimal "
                             f"rectangle): {fixed}")


def check_plan(sites: Sequence[AttentionSite], plan: Plan) -> Verdict:
    """Check every site against `plan`. Returns the lines to print and the argument changes a fixed_pe layer
    needs; raises FeatureMapError (one line) when a site cannot take the run's maps."""
    verdict, said = Verdict(), set()
    for site in sites:
        _refuse_small(site, plan)
        problem = site.query_problem(plan.hw)
        if problem:
            raise FeatureMapError(f"{problem} ({_given_text(plan)})")
        head = (f"DAttention {site.name}: stride {site.stride}, {site.variant}{site.queries_text(plan.hw)}, "
                f"declared {fmt(site.declared)}")
        if site.size_fixed:
            notes = Verdict()
            _enforce(site, plan, notes, said)
            verdict.lines += [f"{head}; runs at {fmt(site.declared)} only"] + notes.lines
            verdict.overrides.update(notes.overrides)
            verdict.square_val = verdict.square_val or notes.square_val
        else:
            verdict.lines.append(f"{head} (any size); {_describe(site, plan)}")
    return verdict


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
    return Plan(mode=mode, given=args.get("imgsz", 640), hw=hw, gs=gs,
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
        kwargs.update(verdict.overrides)
        token = _square_val.set(verdict.square_val)
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
            kwargs.update(verdict.overrides)
        return original(self, validator=validator, **kwargs)
    return val


def _predict(original):
    @functools.wraps(original)
    def predict(self, source=None, stream=False, predictor=None, **kwargs):
        verdict = _checked(self, "predict", kwargs)
        if verdict is not None:
            kwargs.update(verdict.overrides)
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
