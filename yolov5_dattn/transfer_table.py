"""What a transfer from a baseline checkpoint loaded, as a short table: host-agnostic.

Both hosts load every checkpoint tensor whose name and shape match the new model (`intersect_dicts`) and
our blocks keep their parents' convolution names, so a stock checkpoint fills everything except the
attention. `summarise` sorts each tensor of the new model's state_dict by what happened to it and
`format_table` prints the counts; `yolov5_dattn.hosts.yolov5.transfer` and `yolov5_dattn.hosts.ultralytics.transfer`
call them from each host's load. Nothing here imports a host.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import torch

ATTENTION_KEY = ".attention."  # Bottleneck_DAttention.attention: every such DAttention tensor's name has it
LAYER_SCALE_KEY = ".layer_scale."  # the safe insertion's per-channel scale of that attention (new with it)
SCORER_KEY = ".query_scorer."  # a sparse DAttention's query scorer (query_ratio < 1; a dense one has none)

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
