"""docs/architecture.md's seam tables are the hosts' step tables (`hosts/<host>/changes.py`), row for row and in order:
kind, step (the patching journal's name), what it changes, where in the host, why."""
import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
ROW = re.compile(r"^\| (plugin|repair|policy) \| `([^`]+)` \| (.*) \| (.*) \| (.*) \|$")


def documented(heading: str) -> list:
    """The step rows under `heading`, up to the next heading of the same or a higher level."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    level = heading.split()[0]
    end = min((i for i in (text.find(f"\n{h} ", start + 1) for h in ("#" * n for n in range(1, len(level) + 1)))
               if i != -1), default=len(text))
    return [m.groups() for m in map(ROW.match, text[start:end].splitlines()) if m]


@pytest.mark.parametrize("host, heading", [("yolov5", "### YOLOv5"), ("ultralytics", "### ultralytics")])
def test_the_documented_table_is_the_step_table(host, heading):
    steps = importlib.import_module(f"yolov5_dattn.hosts.{host}.changes").STEPS
    assert documented(heading) == [(s.kind, s.name, s.targets, s.line, s.why) for s in steps]
