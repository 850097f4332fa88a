"""`yolov5-dattn changes` and `yolov5-dattn registry`: where this plugin touches YOLOv5, and what it registered.

`changes` installs everything the plugin's commands install (the shims, the parse_model hook, the summary,
the entry modules' patches, the run-time wrappers) and prints each change in place, in the order made,
grouped by the documented step of `yolov5_dattn.yolov5.changes` (with the YOLOv5 7.0.14 line it concerns).
`registry` prints the modules model YAMLs can name, with where each is defined.
"""
import argparse
from typing import Sequence


def _full_install() -> None:
    """What a training run installs: `import yolov5_dattn`, the entry modules, the run-time wrappers."""
    import yolov5_dattn  # noqa: F401
    import yolov5  # noqa: F401
    from yolov5_dattn.yolov5 import compat, data_yaml, square_inputs, transfer
    compat.apply_entrypoints()
    data_yaml.install()
    transfer.install()
    square_inputs.install()


def changes_main(argv: Sequence[str], prog: str = "yolov5-dattn changes") -> int:
    """Print every change to YOLOv5 in place after a full install: step (YOLOv5 line), then owner.name and why."""
    parser = argparse.ArgumentParser(prog=prog, description="List every run-time change yolov5-dattn makes to "
                                     "YOLOv5 (what, why, which YOLOv5 7.0.14 line), in the order it is made.")
    parser.add_argument("--steps", action="store_true",
                        help="list the documented steps (yolov5_dattn/yolov5/changes.py) instead, applied or not")
    opt = parser.parse_args(list(argv))
    from yolov5_dattn.yolov5 import changes
    if opt.steps:
        for step in changes.STEPS:
            note = " [process setting]" if step.process else ""
            print(f"{step.phase:<13} {step.name:<42} {step.line}{note}\n{'':<14}{step.targets}: {step.why}")
        return 0
    from yolov5_dattn import patching
    _full_install()
    shown = None
    for change in patching.changes():
        if change.step != shown:
            shown = change.step
            step = changes.step_of(change)
            print(f"{shown or '(no step)'}" + (f"  (YOLOv5 {step.line})" if step is not None else ""))
        print(f"  {change.where}: {change.why}")
    process = [s for s in changes.STEPS if s.process]
    if process:
        print("process settings (not attributes): " + "; ".join(f"{s.targets} ({s.name})" for s in process))
    return 0


def registry_main(argv: Sequence[str], prog: str = "yolov5-dattn registry") -> int:
    """Print the registered modules: YAML name, class, how parse_model builds it, where it is defined."""
    parser = argparse.ArgumentParser(prog=prog, description="List the modules yolov5-dattn registered into "
                                     "YOLOv5's parse_model (the names a model YAML may use besides YOLOv5's own).")
    parser.parse_args(list(argv))
    import yolov5_dattn  # noqa: F401
    import yolov5  # noqa: F401
    from yolov5_dattn.yolov5 import registry
    rows = registry.registered()
    width = max(len(r.name) for r in rows)
    print(f"{'name':<{width}}  {'channels':<8}  {'repeats':<7}  defined at")
    for r in rows:
        print(f"{r.name:<{width}}  {'c1, c2' if r.channels else 'as is':<8}  {'n' if r.repeats else '-':<7}  {r.where}")
    return 0
