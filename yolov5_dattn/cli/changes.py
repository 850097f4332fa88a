"""`yolov5-dattn changes` and `yolov5-dattn registry`: where this plugin touches a host, and what it registered.

`changes` installs everything the plugin's commands install and prints each change in place, in the order made,
grouped by the step that made it. `--host yolov5` (the default): the shims, the parse_model hook, the summary,
the entry modules' patches, the run-time wrappers, grouped by the documented step of `yolov5_dattn.hosts.yolov5.changes`
(with the YOLOv5 7.0.14 line it concerns). `--host ultralytics`: what `import yolov5_dattn.hosts.ultralytics` installs,
grouped by the numbered steps of that package's docstring.
`registry` prints the modules model YAMLs can name (YOLOv5's or ultralytics'), with where each is defined.
"""
import argparse
from typing import Sequence

HOSTS = ("yolov5", "ultralytics")
HOST_HELP = "which host library: yolov5 (the default: YOLOv5 7.0.14) or ultralytics (YOLOv8/11/26, RT-DETR)"


def _ultralytics_changes(steps: bool) -> int:
    """`changes --host ultralytics`: the documented steps, or every change in place grouped by step."""
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (installs the host)
    from yolov5_dattn.core.steps import table
    from yolov5_dattn.hosts.ultralytics.changes import STEPS
    if steps:
        print(table(STEPS, "ultralytics 8.4.190"))
        return 0
    from yolov5_dattn import patching
    documented = {s.name: s for s in STEPS}
    _print_changes(patching.changes("ultralytics"),
                   lambda change: change.step + (f"  ({documented[change.step].kind})"
                                                 if change.step in documented else "  (undocumented)"))
    return 0
    from yolov5_dattn import patching
    _print_changes(patching.changes("ultralytics"), lambda change: change.step or "(no step)")
    return 0


def _print_changes(changes, heading) -> None:
    """Each change in place (`  owner.name: why`) under `heading(change)` of the first change of each step."""
    shown = None
    for change in changes:
        if change.step != shown:
            shown = change.step
            print(heading(change))
        print(f"  {change.where}: {change.why}")


def _full_install() -> None:
    """What a training run installs: `import yolov5_dattn`, the entry modules, the run-time wrappers."""
    import yolov5_dattn  # noqa: F401
    import yolov5  # noqa: F401
    from yolov5_dattn.hosts.yolov5 import compat, data_yaml, square_inputs, transfer
    compat.apply_entrypoints()
    data_yaml.install()
    transfer.install()
    square_inputs.install()


def changes_main(argv: Sequence[str], prog: str = "yolov5-dattn changes") -> int:
    """Print every change to YOLOv5 in place after a full install: step (YOLOv5 line), then owner.name and why."""
    parser = argparse.ArgumentParser(prog=prog, description="List every run-time change yolov5-dattn makes to "
                                     "a host library (what, why; for YOLOv5 which 7.0.14 line), in the order it is "
                                     "made.")
    parser.add_argument("--host", choices=HOSTS, default="yolov5", help=HOST_HELP)
    parser.add_argument("--steps", action="store_true",
                        help="list the documented steps instead, applied or not, as one typed table (kind plugin / "
                             "repair / policy, host file:line, why): yolov5_dattn/hosts/yolov5/changes.py, "
                             "yolov5_dattn/hosts/ultralytics/changes.py")
    opt = parser.parse_args(list(argv))
    if opt.host == "ultralytics":
        return _ultralytics_changes(opt.steps)
    from yolov5_dattn.hosts.yolov5 import changes
    if opt.steps:
        from yolov5_dattn.core.steps import table
        print(table(changes.STEPS, "YOLOv5 7.0.14"))
        return 0
    from yolov5_dattn import patching
    _full_install()

    def heading(change) -> str:
        step = changes.step_of(change)
        return f"{change.step or '(no step)'}" + (f"  ({step.kind}, YOLOv5 {step.line})" if step is not None else "")
    _print_changes(patching.changes(), heading)
    process = [s for s in changes.STEPS if s.process]
    if process:
        print("process settings (not attributes): " + "; ".join(f"{s.targets} ({s.name})" for s in process))
    return 0


def registry_main(argv: Sequence[str], prog: str = "yolov5-dattn registry") -> int:
    """Print the registered modules: YAML name, class, how parse_model builds it, where it is defined."""
    parser = argparse.ArgumentParser(prog=prog, description="List the modules yolov5-dattn registered into the "
                                     "host's parse_model (the names a model YAML may use besides the host's own).")
    parser.add_argument("--host", choices=HOSTS, default="yolov5", help=HOST_HELP)
    opt = parser.parse_args(list(argv))
    if opt.host == "ultralytics":
        return _ultralytics_registry()
    import yolov5_dattn  # noqa: F401
    import yolov5  # noqa: F401
    from yolov5_dattn.hosts.yolov5.registry import REGISTRY
    print(REGISTRY.table())
    return 0


def _ultralytics_registry() -> int:
    """`registry --host ultralytics`: YAML name, how parse_model builds it, where it is defined."""
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (installs the host)
    from yolov5_dattn.hosts.ultralytics.registry import REGISTRY
    print(REGISTRY.table())
    return 0
