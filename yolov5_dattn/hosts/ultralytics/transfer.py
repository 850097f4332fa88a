"""Starting a DAttention model from a stock ultralytics checkpoint: say what was transferred and what starts fresh.

`yolo train model=yolo11n-c3k2-dattn.yaml pretrained=yolo11n.pt` and `YOLO(cfg).load("yolo11n.pt")` both end in
`BaseModel.load`, which copies every checkpoint tensor whose name and shape match (`intersect_dicts`) and logs
only "Transferred 499/529 items". Our blocks subclass the stock ones and keep their convolutions' names, so a
stock checkpoint fills everything but the attention. `apply()` wraps `BaseModel.load` (ultralytics' own load
runs unchanged, first) so that a load into or from a model with DAttention also logs the table of
`yolov5_dattn.transfer_table`: what was copied, which DAttention modules start fresh, what differs in shape
(a Detect for another nc), per top-level layer, and whether the non-attention part was fully transferred.
A checkpoint that fits (almost) nothing, such as another model family, gets a warning line.

The checkpoint itself is read by ultralytics (`load_checkpoint`), with the restricted loading of
`checkpoints.py`; nothing here unpickles anything.
"""
import weakref
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from yolov5_dattn import patching
from yolov5_dattn.transfer_table import TransferReport, format_table, summarise

STEP = "transfer report"
WHY = "ultralytics logs only a count of transferred tensors, not which start fresh (the attention) or why"
COUNTER = "num_batches_tracked"  # BatchNorm's step counter: matches by name in any family, carries no weights
MIN_SHARE = 0.5  # below this share of the non-attention values transferred, the checkpoint is of another model
NAMES_SHOWN = 2  # shape-mismatched tensor names listed per layer

last_report: Optional[TransferReport] = None  # the latest report (tests and callers read it)
_reported: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # models a table was logged for


def attention_modules(model: torch.nn.Module) -> List[str]:
    """Names of the DAttention modules in `model` ('model.8.m.0.m.0.attention', 'model.10.m.0.attn')."""
    from yolov5_dattn.nn.dattention import DAttention
    return [name for name, m in model.named_modules() if isinstance(m, DAttention)]


def _source(weights) -> torch.nn.Module:
    """The module `BaseModel.load` reads its tensors from (a checkpoint dict's EMA first, as it does)."""
    return (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights


def _layer(key: str) -> str:
    """The top-level layer index of a state_dict name ('model.23.cv3.0.2.weight' -> '23')."""
    parts = key.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit() else parts[0]


def _ranges(indices: Sequence[str], bridges: Sequence[str] = ()) -> str:
    """'0-10, 13-23' for layer indices; `bridges` (layers without tensors: Upsample, Concat) join two spans but
    start none. Names that are not indices are listed as they are."""
    numbers, bridge = {int(i) for i in indices if i.isdigit()}, {int(i) for i in bridges if i.isdigit()}
    spans: List[Tuple[int, int]] = []
    for n in sorted(numbers | bridge):
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        elif n in numbers:
            spans.append((n, n))
    spans = [(a, max(n for n in numbers if a <= n <= b)) for a, b in spans]  # nor ends on one
    words = [f"{a}-{b}" if b > a else f"{a}" for a, b in spans]
    return ", ".join(words + sorted(i for i in indices if not i.isdigit()))


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def by_layer(report: TransferReport, model: torch.nn.Module, checkpoint: Mapping[str, torch.Tensor],
             state: Mapping[str, torch.Tensor]) -> List[str]:
    """Table lines per top-level layer: one for the layers fully transferred, one for those with nothing
    transferred and no attention, one for each other layer (what it has of each kind).

    Args: report of `summarise`; model the new model (for layer types); checkpoint and state the checkpoint's
    and the new model's state_dicts (for the shapes of mismatches).
    """
    reasons: Dict[str, Dict[str, List[str]]] = {}
    for reason, keys in report.keys.items():
        for key in keys:
            reasons.setdefault(_layer(key), {}).setdefault(reason, []).append(key)
    layers = getattr(model, "model", None)
    empty = [str(i) for i in range(len(layers))] if isinstance(layers, torch.nn.Sequential) else []
    empty = [i for i in empty if i not in reasons]  # layers without tensors

    def kind(index: str) -> str:
        if index.isdigit() and isinstance(layers, torch.nn.Sequential) and int(index) < len(layers):
            return f" ({type(layers[int(index)]).__name__})"
        return ""

    full = [i for i, r in reasons.items() if set(r) == {"transferred"}]
    none = [i for i, r in reasons.items() if "transferred" not in r and "attention" not in r]
    lines = [f"  layers {_ranges(full, empty)}: all transferred"] if full else []
    if none:
        lines.append(f"  layers {_ranges(none, empty)}: nothing transferred "
                     f"({sum(len(k) for i in none for k in reasons[i].values())} tensors fresh)")
    labels = {"scorer": "fresh (query scorer)", "attention": "fresh (DAttention)", "shape": "fresh (shape differs",
              "excluded": "fresh (excluded)", "missing": "fresh (not in the checkpoint)"}
    rest = [i for i in reasons if i not in full and i not in none]
    for index in sorted(rest, key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i)):
        parts = [f"{len(reasons[index].get('transferred', []))} transferred"]
        for reason, label in labels.items():
            keys = reasons[index].get(reason, [])
            if keys:
                part = f"{len(keys)} {label}"
                if reason == "shape":  # which tensors, checkpoint -> model shape
                    shown = [f"{k.split('.', 2)[-1]} {_shape(checkpoint[k])} -> {_shape(state[k])}"
                             for k in keys[:NAMES_SHOWN]]
                    part += f": {', '.join(shown)}{', ...' if len(keys) > NAMES_SHOWN else ''})"
                parts.append(part)
        lines.append(f"  layer {index}{kind(index)}: {'; '.join(parts)}")
    return lines


def verdict(report: TransferReport, kept: int = 0, kept_values: int = 0) -> Tuple[str, Optional[str]]:
    """(the table's closing line on the non-attention part, a warning or None).

    Args: report of `summarise`; kept, kept_values: the transferred DAttention tensors and their values (a
    checkpoint with the attention), left out of the non-attention part.
    The warning is for a checkpoint that fits nothing but BatchNorm counters, or under `MIN_SHARE` of the
    non-attention values: another model family, task or scale.
    """
    fresh = [r for r in ("shape", "excluded", "missing") if report.keys[r]]
    done = len(report.keys["transferred"]) - kept
    others = done + sum(len(report.keys[r]) for r in fresh)
    if not fresh:
        line = f"  non-attention part: fully transferred ({done}/{others} tensors)"
    else:
        words = {"shape": "shape differs", "excluded": "excluded", "missing": "not in the checkpoint"}
        counts = ", ".join(f"{len(report.keys[r])} {words[r]}" for r in fresh)
        line = f"  non-attention part: {done}/{others} tensors transferred, {others - done} start fresh ({counts})"
    weights = [k for k in report.keys["transferred"] if not k.endswith(COUNTER)]
    moved = report.values["transferred"] - kept_values
    values = moved + sum(report.values[r] for r in fresh)
    warning = None
    if not weights:
        warning = ("nothing transferred: no weight of the checkpoint has a name and shape of this model "
                   "(another model family, task or scale?); the model trains from scratch")
    elif moved < MIN_SHARE * values:
        share = moved / max(values, 1)
        share_text = f"{share:.0%}" if share >= 0.01 else "under 1%"
        warning = (f"only {share_text} of the non-attention values transferred ({done}/{others} tensors): the "
                   f"checkpoint looks like another model family or scale; most of the model trains from scratch")
    return line, warning


def log_report(model: torch.nn.Module, source: torch.nn.Module) -> TransferReport:
    """Log the table for a load of `source` into `model` (ultralytics' LOGGER: rank 0 only under DDP), a warning
    line when the checkpoint fits (almost) nothing, and return the report."""
    global last_report
    from ultralytics.nn import tasks
    from ultralytics.utils import LOGGER
    # recomputed the way BaseModel.load matches (name and shape, after its Detect rebuild for another nc)
    checkpoint, state, prefixes = source.state_dict(), model.state_dict(), attention_modules(model)
    last_report = result = summarise(checkpoint, state, tasks.intersect_dicts(checkpoint, state),
                                     attention_prefixes=prefixes)
    name = getattr(source, "pt_path", None) or "the given model"
    if source in _reported:  # train() after YOLO(cfg).load(...) loads the model loaded then into a fresh one
        name = f"the model loaded before (from {name})"
    if source in _reported and result.total == len(result.keys["transferred"]):
        LOGGER.info(f"Transfer: all {result.total} tensors from {name}; its table is above")
    else:
        kept = [k for k in result.keys["transferred"] if any(k.startswith(p + ".") for p in prefixes)]
        line, warning = verdict(result, len(kept), sum(state[k].numel() for k in kept))
        lines = [format_table(result, name)]
        if kept:  # a checkpoint of a DAttention model (resume, fine-tuning): its attention lands too
            lines.append(f"  DAttention: {len(kept)} tensors transferred (the checkpoint has the attention)")
        lines += [line, *by_layer(result, model, checkpoint, state)]
        LOGGER.info("\n".join(lines))
        if warning:
            LOGGER.warning(f"{name}: {warning}")
    _reported.add(model)
    return result


def _reporting(load):
    """`BaseModel.load` that, after loading as ultralytics does, logs the transfer table when either model has
    DAttention (a stock-to-stock load logs only ultralytics' own line)."""

    def load_with_report(self, weights, *args, **kwargs):
        result = load(self, weights, *args, **kwargs)
        verbose = kwargs.get("verbose", args[0] if args else True)
        source = _source(weights)
        if verbose and isinstance(source, torch.nn.Module) and (attention_modules(self) or
                                                                attention_modules(source)):
            log_report(self, source)
        return result

    return load_with_report


def apply() -> None:
    """Wrap `BaseModel.load` to log the transfer table (idempotent)."""
    from ultralytics.nn import tasks
    with patching.applying(STEP):
        if not patching.is_patched(tasks.BaseModel, "load", WHY):
            patching.patch(tasks.BaseModel, "load", _reporting(tasks.BaseModel.load), why=WHY)
