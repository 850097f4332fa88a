"""The typed table of what a host adapter changes in its host, one row per step, the same type for both hosts.

Each step's changes are made through `yolov5_dattn.patching` inside `patching.applying(step.name)`, so the journal
(`yolov5-dattn changes --host H`) groups what is in place under these names, and this table says why each exists:

- plugin: what DAttention needs from the host (its names in parse_model, GFLOPs that count it, its checks);
- repair: the host does not run on today's torch / numpy / Pillow / setuptools without it;
- policy: what our commands promise beyond the host (offline, safe loading, atomic saves, one-line errors);
  applied by our commands, or for library users by one opt-in call, never by an import alone.
"""
from dataclasses import dataclass
from typing import Iterable

__all__ = ["KINDS", "Step", "table"]

KINDS = ("plugin", "repair", "policy")


@dataclass(frozen=True)
class Step:
    """One documented change: its journal name, its kind (`KINDS`), what it changes (the host's names), where that
    bites in the host (file:line of the tested release) and why."""
    name: str
    kind: str
    targets: str
    line: str
    why: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Step {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")


def table(steps: Iterable[Step], host: str) -> str:
    """The steps as text: per step `kind  name  (host file:line)` then its targets and why, indented."""
    lines = []
    for s in steps:
        lines.append(f"{s.kind:<7} {s.name:<42} ({host} {s.line})")
        lines.append(f"{'':<8}{s.targets}: {s.why}")
    return "\n".join(lines)
