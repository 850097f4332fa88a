"""What a transfer from a checkpoint loaded into a model with DAttention, as a short table: the one report both
hosts print.

Both hosts load every checkpoint tensor whose name and shape match the new model (`intersect_dicts`) and
our blocks keep their parents' convolution names, so a stock checkpoint fills everything except the
attention. `summarise` sorts each tensor of the new model's state_dict by what happened to it,
`format_table` prints the counts, `by_layer` adds a line per top-level layer and `verdict` says whether the
non-attention part was transferred (or the checkpoint is of another model). The host adapters
(`yolov5_dattn.hosts.yolov5.transfer`, `yolov5_dattn.hosts.ultralytics.transfer`) call them from each host's
load. Nothing here imports a host.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["ATTENTION_KEY", "LAYER_SCALE_KEY", "SCORER_KEY", "ROWS", "TransferReport", "attention_modules",
           "by_layer", "format_table", "is_attention_by_name", "report_text", "summarise", "verdict"]

ATTENTION_KEY = ".attention."  # Bottleneck_DAttention.attention: every such DAttention tensor's name has it
LAYER_SCALE_KEY = ".layer_scale."  # the safe insertion's per-channel scale of that attention (new with it)
SCORER_KEY = ".query_scorer."  # a sparse DAttention's query scorer (query_ratio < 1; a dense one has none)
COUNTER = "num_batches_tracked"  # BatchNorm's step counter: matches by name in any family, carries no weights
MIN_SHARE = 0.5  # below this share of the non-attention values transferred, the checkpoint is of another model
NAMES_SHOWN = 2  # shape-mismatched tensor names listed per layer

# reason -> table label, in table order
ROWS = OrderedDict([
    ("transferred", "transferred from the checkpoint"),
    ("scorer", "fresh: query scorers (query_ratio < 1)"),
    ("attention", "fresh: DAttention layers (not in a baseline)"),
    ("shape", "fresh: shape differs (e.g. Detect for another nc)"),
    ("excluded", "fresh: excluded by name"),
    ("missing", "fresh: other names not in the checkpoint"),
])


@dataclass
class TransferReport:
    """Every tensor of the new model's state_dict, by what happened to it."""
    keys: Dict[str, List[str]] = field(default_factory=lambda: {reason: [] for reason in ROWS})
    values: Dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in ROWS})
    unused: int = 0  # checkpoint tensors the new model has no place for
    unused_scorers: int = 0  # of those, query-scorer tensors (a sparse checkpoint into a dense model)
    checkpoint_attention: bool = False  # the checkpoint has DAttention tensors (not a baseline)
    attention_modules: List[str] = field(default_factory=list)  # the DAttention modules that start fresh

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.keys.values())


def is_attention_by_name(key: str) -> bool:
    """True for a state_dict name of a DAttention tensor by our naming rule (`.attention.`, `.layer_scale.`)."""
    return ATTENTION_KEY in key or LAYER_SCALE_KEY in key


def _module_of(key: str, prefixes: Sequence[str]) -> Optional[str]:
    """The DAttention module a fresh attention tensor belongs to ('model.8.m.0.attention'); None for a tensor
    beside one (a `.layer_scale.`)."""
    owner = next((p for p in prefixes if key.startswith(p + ".")), None)
    if owner is None and ATTENTION_KEY in key:
        owner = key.split(ATTENTION_KEY)[0] + ATTENTION_KEY.rstrip(".")
    return owner


def summarise(checkpoint: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor],
              transferred: Mapping[str, torch.Tensor], exclude: Sequence[str] = (),
              attention_prefixes: Optional[Sequence[str]] = None) -> TransferReport:
    """Classify each tensor of `model` (a state_dict) given what `intersect_dicts` kept.

    Args:
        checkpoint: the checkpoint's state_dict; model: the new model's state_dict;
        transferred: `intersect_dicts(checkpoint, model, exclude)`; exclude: its substrings;
        attention_prefixes: names of the model's DAttention modules ('model.10.m.0.attn'): a tensor under one
            is attention; None: the naming rule of `is_attention_by_name`.
    Returns: a `TransferReport` (tensor names and value counts per reason).
    """
    prefixes = list(attention_prefixes or ())
    if attention_prefixes is None:
        is_attention = is_attention_by_name
    else:
        def is_attention(key: str) -> bool:
            return any(key.startswith(p + ".") for p in prefixes)
    report = TransferReport()
    for key, tensor in model.items():
        if key in transferred:
            reason = "transferred"
        elif SCORER_KEY in key:  # before the attention rule: the rest of its DAttention may well transfer
            reason = "scorer"
        elif is_attention(key):
            reason = "attention"
        elif any(x in key for x in exclude):
            reason = "excluded"
        elif key in checkpoint:
            reason = "shape"
        else:
            reason = "missing"
        report.keys[reason].append(key)
        report.values[reason] += tensor.numel()
    report.unused = sum(1 for key in checkpoint if key not in model)
    report.unused_scorers = sum(1 for key in checkpoint if key not in model and SCORER_KEY in key)
    report.checkpoint_attention = any(is_attention(key) for key in checkpoint)
    report.attention_modules = sorted({m for m in (_module_of(k, prefixes) for k in report.keys["attention"]) if m})
    return report


def format_table(report: TransferReport, source: str = "checkpoint", rows: Mapping[str, str] = ROWS) -> str:
    """The report as a short fixed-width table (rows with no tensors are left out); `rows`: reason -> label."""
    lines = [f"Transfer from {source}:", f"  {'':<52}{'tensors':>8}{'values':>12}"]
    for reason, label in rows.items():
        if report.keys[reason]:
            lines.append(f"  {label:<52}{len(report.keys[reason]):>8}{report.values[reason]:>12,}")
    lines.append(f"  {'total (new model)':<52}{report.total:>8}{sum(report.values.values()):>12,}")
    if report.attention_modules:
        lines.append(f"  fresh DAttention: {', '.join(report.attention_modules)}")
    if report.unused:
        lines.append(f"  {report.unused} checkpoint tensors have no place in the new model (unused)")
    if report.keys["scorer"] and report.checkpoint_attention:
        lines.append("  query scorers start fresh: the checkpoint's DAttention attends with every query "
                     "(query_ratio 1), this model with the top query_ratio of them")
    if report.unused_scorers:
        lines.append(f"  {report.unused_scorers} of them are query-scorer tensors: the checkpoint's DAttention "
                     f"attends with its top queries (query_ratio < 1), this model's with every query")
    return "\n".join(lines)


def attention_modules(model: torch.nn.Module) -> List[str]:
    """Names of the DAttention modules in `model` ('model.8.m.0.m.0.attention', 'model.10.m.0.attn')."""
    from yolov5_dattn.nn.dattention import DAttention
    return [name for name, m in model.named_modules() if isinstance(m, DAttention)]


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


def report_text(report: TransferReport, model: torch.nn.Module, checkpoint: Mapping[str, torch.Tensor],
                state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                attention_prefixes: Sequence[str] = ()) -> Tuple[str, Optional[str]]:
    """(the whole table: counts, per-layer lines and the closing line of `verdict`; its warning or None).

    Args: report of `summarise`; model the new model; checkpoint and state the checkpoint's and the new model's
    state_dicts; source the checkpoint's name in the title; attention_prefixes the model's DAttention modules
    (`attention_modules(model)`): their tensors that were transferred (a checkpoint with the attention) are
    counted apart from the non-attention part.
    """
    kept = [k for k in report.keys["transferred"] if any(k.startswith(p + ".") for p in attention_prefixes)]
    line, warning = verdict(report, len(kept), sum(state[k].numel() for k in kept))
    lines = [format_table(report, source)]
    if kept:  # a checkpoint of a DAttention model (resume, fine-tuning): its attention lands too
        lines.append(f"  DAttention: {len(kept)} tensors transferred (the checkpoint has the attention)")
    lines += [line, *by_layer(report, model, checkpoint, state)]
    return "\n".join(lines), warning
