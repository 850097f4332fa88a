"""The feature-map check, host-neutral: does every DAttention fit the maps a run will feed it?

A host adapter describes its run as a `Plan` (mode, the imgsz as given and as fed, the max stride, rect /
multi-scale / validation / export switches) and names its options in its own words with `Flags`
(`--imgsz 640` for YOLOv5, `imgsz=640` for ultralytics). `check_plan(sites, plan, flags)` returns a `Verdict`:

- `refusals`: one line each, naming the host's flag and what to do (`Verdict.accept` raises the first as a
  `FeatureMapError`, which the entry points print as `error: ...`);
- `lines`: what each DAttention will see, one per layer, plus a line per change;
- `switch_off` and `square`: what a `fixed_pe` layer needs changed (rectangular / multi-scale training off;
  validation and letterboxing at exactly imgsz). The adapter applies them to its run's options, visibly.

It reads its inputs only: nothing it is given is changed (`Plan`, `Flags` and `Verdict` are frozen).

The rules:

- size-free position terms (dwc_pe, log_cpb, the interpolated table) run at any size: a line says what they see;
- `fixed_pe` (its parameters only fit the declared q_size) refuses an imgsz that gives another map, naming the
  imgsz and the q_size that would fit; it switches off rectangular and multi-scale training, asks for square
  validation / letterboxing, and refuses a dynamic export;
- a map smaller than the layer's offset network takes (its conv kernel with no padding, `no_off`'s pooling) is
  refused, and so is training on a 1x1 map: over a single cell every query has one key (attention weight 1)
  and no gradient reaches the sampling offsets;
- a host that would only warn when it rounds an imgsz off the stride grid (`Plan.refuse_rounding`) gets a
  refusal naming the rounded size instead.
"""
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from yolov5_dattn.errors import UserError
from yolov5_dattn.nn.sites import AttentionSite, fmt, rect_val_long_side

__all__ = ["MODES", "FeatureMapError", "Flags", "YOLOV5_FLAGS", "ULTRALYTICS_FLAGS", "Plan", "Verdict",
           "check_plan", "multiscale_range"]

MODES = ("train", "val", "predict", "export")
HW = Tuple[int, int]


class FeatureMapError(UserError):
    """A DAttention cannot take the feature maps this run would feed it (the message says what to change)."""


@dataclass(frozen=True)
class Flags:
    """How one host's users spell the options a message names.

    host: the host's name in the possessive, as messages use it ("YOLOv5's"); names: option key -> spelling for
    the keys imgsz, rect, multi_scale, dynamic and source. A spelling ending in '=' is a keyword (`imgsz=640`,
    `imgsz=[640, 480]`, `rect=True`); any other is a command-line flag (`--imgsz 640 480`). switches: the keys
    that are bare command-line switches (`--rect`), written without a value.
    """
    host: str
    names: Mapping[str, str]
    switches: FrozenSet[str] = frozenset()

    def __post_init__(self):
        object.__setattr__(self, "names", MappingProxyType(dict(self.names)))
        object.__setattr__(self, "switches", frozenset(self.switches))

    def name(self, key: str) -> str:
        """The option's bare name: '--rect', 'rect'."""
        return self.names[key].rstrip("=")

    def value(self, key: str, value: Any) -> str:
        """`value` as the user writes it after the option: sizes '640' / '640 480' (flag) or '[640, 480]' (keyword)."""
        keyword = self.names[key].endswith("=")
        if isinstance(value, (list, tuple)):
            sizes = [int(v) for v in value]
            if len(sizes) == 1:
                return str(sizes[0])
            return str(sizes) if keyword else " ".join(map(str, sizes))
        return str(value)

    def arg(self, key: str, value: Any = True) -> str:
        """The option as the user writes it: '--imgsz 640', '--rect', 'imgsz=640', 'rect=True', 'multi_scale=0.5'."""
        spelling = self.names[key]
        if spelling.endswith("="):
            return f"{spelling}{self.value(key, value)}"
        if key in self.switches:
            return spelling
        return f"{spelling} {self.value(key, value)}"


YOLOV5_FLAGS = Flags("YOLOv5's", {"imgsz": "--imgsz", "rect": "--rect", "multi_scale": "--multi-scale",
                                  "dynamic": "--dynamic", "source": "--source"},
                     switches={"rect", "multi_scale", "dynamic"})
ULTRALYTICS_FLAGS = Flags("ultralytics'", {"imgsz": "imgsz=", "rect": "rect=", "multi_scale": "multi_scale=",
                                           "dynamic": "dynamic=", "source": "source="})


@dataclass(frozen=True)
class Plan:
    """The inputs one run will feed the model.

    mode: one of MODES; given: the imgsz as the user gave it (an int or a list of ints); hw: (h, w) the host
    feeds, after its own rounding; gs: the max stride; rect: rectangular batches (train), rectangular padded
    validation batches (val), letterboxing only to a stride multiple (predict); multi_scale: the fraction
    multi-scale training varies the side by (0: off); validates: the run validates (train: each epoch);
    square_eval: validation and prediction always at exactly imgsz (RT-DETR); checkpoint: the model came from a
    checkpoint (its q_size cannot be edited); dynamic: an export with dynamic input sizes; source_shapes: the
    distinct letterboxed input sizes of the prediction source, with counts, most common first (None: unknown);
    refuse_rounding: an imgsz off the stride grid is refused (the host would round it with only a warning);
    train_floor: the smallest training imgsz (pixels) the host accepts unrounded (0: none).
    """
    mode: str
    given: Any
    hw: HW
    gs: int
    rect: bool = False
    multi_scale: float = 0.0
    validates: bool = False
    square_eval: bool = False
    checkpoint: bool = False
    dynamic: bool = False
    source_shapes: Optional[Tuple[Tuple[HW, int], ...]] = None
    refuse_rounding: bool = False
    train_floor: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {MODES}")
        object.__setattr__(self, "hw", (int(self.hw[0]), int(self.hw[1])))
        if self.source_shapes is not None:
            object.__setattr__(self, "source_shapes", tuple((tuple(hw), int(n)) for hw, n in self.source_shapes))

    @property
    def sizes(self) -> List[int]:
        """The imgsz values as given ([640], [640, 480]); [h] when `given` is not a size."""
        given = self.given if isinstance(self.given, (list, tuple)) else [self.given]
        try:
            return [int(v) for v in given]
        except (TypeError, ValueError):
            return [self.hw[0]]


@dataclass(frozen=True)
class Verdict:
    """What the check decided.

    lines: what each DAttention will see, and each change, one line each; refusals: one line each, naming the
    host's flag and what to do; switch_off: option keys ('rect', 'multi_scale') the run must turn off; square:
    validation and letterboxing at exactly imgsz instead of the host's rectangles.
    """
    lines: Tuple[str, ...] = ()
    refusals: Tuple[str, ...] = ()
    switch_off: Tuple[str, ...] = ()
    square: bool = False

    def accept(self, error: type = FeatureMapError) -> "Verdict":
        """This verdict when nothing is refused; else raises `error` with the first refusal (one line)."""
        if self.refusals:
            raise error(self.refusals[0])
        return self


def multiscale_range(side: int, gs: int, fraction: float) -> HW:
    """Smallest and largest square side multi-scale training picks: randrange(max(gs, side·(1-f)),
    side·(1+f) + gs) // gs · gs (YOLOv5's train.py with f = 0.5, ultralytics' preprocess_batch with f =
    multi_scale)."""
    low = max(gs, int(side * (1.0 - fraction))) // gs * gs
    high = (int(side * (1.0 + fraction) + gs) - 1) // gs * gs
    return low, max(high, low)


# ---- how a message names sizes ---------------------------------------------------------------------------------
def _hw_text(hw: Sequence[int]) -> str:
    return f"{int(hw[0])}x{int(hw[1])}"


def _sides(hw: Sequence[int]) -> List[int]:
    """(h, w) as imgsz values: one when square."""
    return [int(hw[0])] if hw[0] == hw[1] else [int(hw[0]), int(hw[1])]


def _imgsz(flags: Flags, hw: Sequence[int]) -> str:
    """The imgsz option for input (h, w): '--imgsz 64', 'imgsz=[64, 96]'."""
    return flags.arg("imgsz", _sides(hw))


def _given(plan: Plan, flags: Flags) -> str:
    """The imgsz the user gave, and what the host rounds it to when that differs ('imgsz=150 (rounded to 160)')."""
    sizes = plan.sizes
    shown = flags.arg("imgsz", sizes)
    as_hw = sizes * 2 if len(sizes) == 1 else sizes[:2]
    if tuple(as_hw) != plan.hw:
        shown += f" (rounded to {flags.value('imgsz', _sides(plan.hw))})"
    return shown


def _at_least(cells: int, site: AttentionSite, gs: int) -> int:
    """The smallest imgsz (a multiple of gs) whose map at `site` has `cells` cells per side."""
    return max(math.ceil(cells * site.stride / gs) * gs, gs)


# ---- the checks --------------------------------------------------------------------------------------------------
def _rounding(plan: Plan, flags: Flags) -> Optional[str]:
    """The refusal for an imgsz the host would round (refuse_rounding), else None."""
    if not plan.refuse_rounding:
        return None
    gs, hw = plan.gs, plan.hw
    if any(s % gs for s in hw):
        fixed = [max(math.ceil(s / gs) * gs, gs) for s in hw]
        return (f"{flags.arg('imgsz', plan.sizes)} is not a multiple of the model's max stride {gs}: "
                f"use {_imgsz(flags, fixed)}")
    if plan.mode == "train" and hw[0] < plan.train_floor:
        return (f"{flags.arg('imgsz', plan.sizes)} is below {flags.host} training minimum of "
                f"{plan.train_floor // gs}x the max stride: use {flags.arg('imgsz', [plan.train_floor])} or more")
    return None


def _too_small(site: AttentionSite, plan: Plan, flags: Flags) -> Optional[str]:
    """The refusal when a map the run feeds `site` is smaller than it can take, else None."""
    least = site.smallest_side
    got = site.fmap(plan.hw)
    what = (f"its offset network (kernel {site.module.ksize}, stride {site.module.stride})" if not site.module.no_off
            else f"its key pooling (stride {site.module.stride})")
    if min(got) < least:
        return (f"{site.name} ({site.variant}) needs a feature map of at least {least}x{least} ({what}) but "
                f"{_given(plan, flags)} gives {_hw_text(got)}: use "
                f"{flags.arg('imgsz', [_at_least(least, site, plan.gs)])} or more")
    if plan.mode == "train" and min(got) < 2:
        return (f"{site.name} ({site.variant}) would train on a {_hw_text(got)} map at {_given(plan, flags)}: "
                f"over a single cell every query has one key (attention weight 1) and no gradient reaches the "
                f"sampling offsets; use {flags.arg('imgsz', [_at_least(2, site, plan.gs)])} or more")
    if plan.mode == "train" and plan.multi_scale > 0 and not site.size_fixed:  # fixed_pe: switched off instead
        low, _ = multiscale_range(plan.hw[0], plan.gs, plan.multi_scale)
        if min(site.fmap([low, low])) < least:
            return (f"{flags.arg('multi_scale', plan.multi_scale)} goes down to {low}x{low} inputs, which give "
                    f"{site.name} {_hw_text(site.fmap([low, low]))}, below the {least}x{least} {what} needs: drop "
                    f"{flags.arg('multi_scale', plan.multi_scale)} or use a larger {flags.name('imgsz')}")
    return None


def _rect_val(plan: Plan) -> bool:
    """The run validates on the host's rectangular padded batches."""
    return plan.validates and not plan.square_eval and (plan.mode == "train" or plan.rect)


def _describe(site: AttentionSite, plan: Plan, flags: Flags) -> str:
    """What a size-free `site` will see in this run (one line)."""
    hw, given = plan.hw, _given(plan, flags)
    parts = []
    if plan.mode == "val" and plan.rect and not plan.square_eval:
        pass  # validation batches are rectangles, said below
    elif plan.mode == "predict" and plan.rect and not plan.square_eval:
        if plan.source_shapes:
            seen = ", ".join(fmt(site.fmap(shape)) + (f" x{n}" if n > 1 else "") for shape, n in plan.source_shapes[:4])
            more = f" and {len(plan.source_shapes) - 4} more" if len(plan.source_shapes) > 4 else ""
            parts.append(f"{given} -> {fmt(site.fmap(hw))}; {flags.name('source')} letterboxed -> {seen}{more}")
        else:
            parts.append(f"{given} -> up to {fmt(site.fmap(hw))} (letterboxed, short side by aspect)")
    else:
        parts.append(f"{given} -> {fmt(site.fmap(hw))}")
    if plan.mode == "export" and plan.dynamic:
        parts.append(f"{flags.arg('dynamic')}: any multiple of the stride")
    if plan.mode == "train":
        if plan.rect and not plan.square_eval:
            parts.append(f"{flags.name('rect')}: long side {max(site.fmap(hw))}, short side by aspect")
        if plan.multi_scale > 0:
            low, high = multiscale_range(hw[0], plan.gs, plan.multi_scale)
            parts.append(f"{flags.arg('multi_scale', plan.multi_scale)} {fmt(site.fmap([low, low]))}.."
                         f"{fmt(site.fmap([high, high]))}")
    if _rect_val(plan):
        long = rect_val_long_side(hw[0], plan.gs)
        parts.append(f"validation (rectangular, padded): long side {math.ceil(long / site.stride)}, short side by "
                     f"aspect")
    return "; ".join(parts)


def _wrong_size(site: AttentionSite, plan: Plan, flags: Flags) -> Optional[str]:
    """For a fixed_pe `site`: the refusal of a dynamic export or of an imgsz whose map is not the declared one."""
    declared, got = tuple(site.declared), site.fmap(plan.hw)
    need = site.input_for(declared)
    if plan.mode == "export" and plan.dynamic:
        return (f"{flags.arg('dynamic')}: {site.name} uses fixed_pe and only runs at {_hw_text(declared)} "
                f"({_imgsz(flags, need)}): drop {flags.arg('dynamic')} or use a size-free position term (dwc_pe) "
                f"in the model YAML's fmapsize")
    if got == declared:
        return None
    if plan.mode in ("train", "val") and declared[0] != declared[1]:
        fix = f"set a square q_size such as {fmt(got)} in the model YAML's fmapsize ({plan.mode} batches are square)"
    elif plan.checkpoint:
        fix = f"use {_imgsz(flags, need)}: the size its fixed_pe table was built for"
    else:
        fix = f"use {_imgsz(flags, need)} or set q_size {fmt(got)} in the model YAML's fmapsize"
    return (f"{site.name} (fixed_pe) is declared for {_hw_text(declared)} ({_imgsz(flags, need)}) but "
            f"{_given(plan, flags)} gives {_hw_text(got)}: {fix}")


def _changes(site: AttentionSite, plan: Plan, flags: Flags, done: set) -> List[str]:
    """For a fixed_pe `site` at its size: the lines of what the run must change, each change once per run (the
    keys of `done`, this call's own record)."""
    fixed = f"{site.name} uses fixed_pe {fmt(site.declared)}"
    notes = []
    if plan.mode == "train" and plan.rect and not plan.square_eval and "rect" not in done:
        done.add("rect")
        notes.append(f"{flags.arg('rect')} switched off: {fixed}, rectangular batches would give other sizes")
    if plan.mode == "train" and plan.multi_scale > 0 and "multi_scale" not in done:
        done.add("multi_scale")
        low, high = multiscale_range(plan.hw[0], plan.gs, plan.multi_scale)
        notes.append(f"{flags.arg('multi_scale', plan.multi_scale)} switched off: {fixed}, multi-scale would give "
                     f"{fmt(site.fmap([low, low]))}..{fmt(site.fmap([high, high]))}")
    if _rect_val(plan) and "square" not in done:
        done.add("square")
        long = rect_val_long_side(plan.hw[0], plan.gs)
        notes.append(f"validation uses square {_hw_text(plan.hw)} inputs instead of {flags.host} rectangular "
                     f"batches (long side {long}): {fixed}")
    if plan.mode == "predict" and plan.rect and not plan.square_eval and "square" not in done:
        done.add("square")
        notes.append(f"inference letterboxes every image to exactly {_hw_text(plan.hw)} (not the minimal "
                     f"rectangle): {fixed}")
    return notes


def _refusal(site: AttentionSite, plan: Plan, flags: Flags) -> Optional[str]:
    """The first reason `site` cannot take the run's maps (too small, a query_ratio that selects nothing, a
    fixed_pe size), else None."""
    small = _too_small(site, plan, flags)
    if small:
        return small
    query = site.query_problem(plan.hw)
    if query:
        return f"{query} ({_given(plan, flags)})"
    return _wrong_size(site, plan, flags) if site.size_fixed else None


def check_plan(sites: Sequence[AttentionSite], plan: Plan, flags: Flags) -> Verdict:
    """Check every DAttention site against `plan`, in the words of `flags`; reads its inputs only.

    Args:
        sites: the model's DAttention sites (`yolov5_dattn.nn.sites.find_attention`), in forward order.
        plan: the run's inputs; flags: the host's spelling of its options (`YOLOV5_FLAGS`, `ULTRALYTICS_FLAGS`).
    Returns: a Verdict: one line per site (plus one per change), the refusals (at most one per site; an imgsz
        the host would round refuses the run before any site), the options to switch off and whether
        validation / letterboxing must be square.
    """
    rounding = _rounding(plan, flags)
    if rounding:
        return Verdict(refusals=(rounding,))
    lines, refusals, done = [], [], set()
    for site in sites:
        problem = _refusal(site, plan, flags)
        if problem:
            refusals.append(problem)
            continue
        head = (f"DAttention {site.name}: stride {site.stride}, {site.variant}{site.queries_text(plan.hw)}, "
                f"declared {fmt(site.declared)}")
        if site.size_fixed:
            lines += [f"{head}; runs at {fmt(site.declared)} only"] + _changes(site, plan, flags, done)
        else:
            lines.append(f"{head} (any size); {_describe(site, plan, flags)}")
    switch_off = tuple(key for key in ("rect", "multi_scale") if key in done)
    return Verdict(lines=tuple(lines), refusals=tuple(refusals), switch_off=switch_off, square="square" in done)
