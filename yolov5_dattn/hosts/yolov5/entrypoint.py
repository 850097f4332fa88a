"""The run seam behind `scripts/*.py` and `yolov5-dattn train|val|detect|export|segment-*`: YOLOv5's own entry
points, with our modules, checked before anything is written.

`main(task)` does, in order:
1. apply the steps the entry modules need (`compat.apply_entrypoints`);
2. parse the command line with YOLOv5's own parser for the task (its `parse_opt`), to which we add our
   few flags (`flags`), so `--help` lists both and every YOLOv5 flag keeps its meaning;
3. check the files the run needs (`run_checks`: weights, checkpoints, data, cfg, source, export formats) and the
   model against the run's sizes (`preflight`), all before anything is written;
4. call the package's own `main`/`run` (outputs land where YOLOv5 puts them: runs/train/exp…).
A `UserError` (or one of YOLOv5's own input assertions) becomes `error: <one line>` and exit status 2.
"""
import argparse
import contextlib
import importlib
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from yolov5_dattn.errors import UserError

__all__ = ["TASKS", "TRAIN_TASKS", "execute", "main", "parse", "parsing"]

# task -> YOLOv5 module whose parse_opt/main we run
TASKS: Dict[str, str] = {
    "train": "yolov5.train",
    "val": "yolov5.val",
    "detect": "yolov5.detect",
    "export": "yolov5.export",
    "segment-train": "yolov5.segment.train",
    "segment-val": "yolov5.segment.val",
    "segment-predict": "yolov5.segment.predict",
}
TRAIN_TASKS = ("train", "segment-train")


@contextlib.contextmanager
def parsing(argv: Sequence[str], prog: str, extend: Callable[[argparse.ArgumentParser], None]):
    """While active, any argparse parser parses `argv` (not sys.argv) after `extend(parser)` ran once on it.

    This lets YOLOv5's `parse_opt` build its parser and post-process the result as it always does. A
    temporary change (`patching.temporarily`): undone when the block exits.
    """
    import weakref

    from yolov5_dattn import patching
    real = argparse.ArgumentParser.parse_known_args
    extended = weakref.WeakSet()

    def parse_known_args(self, args=None, namespace=None):
        if self not in extended:
            extended.add(self)
            self.prog = prog
            extend(self)
        opt, rest = real(self, list(argv) if args is None else args, namespace)
        # bare shipped names (--cfg yolov5l_c3_dattn.yaml) -> their paths here, not in check_inputs:
        # some parse_opt check --data themselves (val: check_yaml) before returning
        from yolov5_dattn.shipped import resolve_options
        resolve_options(opt)
        return opt, rest

    with patching.temporarily(argparse.ArgumentParser, "parse_known_args", parse_known_args,
                              why="YOLOv5's parse_opt parses our argv, with our flags added", step="entrypoint.parsing"):
        yield


def parse(task: str, argv: Sequence[str], prog: Optional[str] = None, echo: Optional[List[str]] = None):
    """Parse `argv` for `task` with YOLOv5's parser plus ours.

    Args:
        echo: if a list, the options line that YOLOv5's `parse_opt` prints (`detect: weights=...`) is appended
            to it instead of being logged, so that a run refused by the checks prints only its `error:` line.
    Returns: (opt, ours) — YOLOv5's namespace (our flags removed, so it can go to YOLOv5's run(**vars))
    and a namespace of our flags.
    """
    from yolov5.utils.general import colorstr

    from yolov5_dattn import patching
    from .flags import OUR_FLAGS, add_our_flags
    module = importlib.import_module(TASKS[task])
    printer = getattr(module, "print_args", None)
    collect = contextlib.nullcontext()
    if echo is not None and printer is not None:
        name = TASKS[task].split(".", 1)[-1].replace(".", "/")  # 'segment/predict', as YOLOv5 labels it

        def print_args(args=None, *_, **__):
            echo.append(colorstr(f"{name}: ") + ", ".join(f"{k}={v}" for k, v in (args or {}).items()))

        collect = patching.temporarily(module, "print_args", print_args, why="the options line waits for the checks",
                                       step="entrypoint.parsing")
    with collect, parsing(argv, prog or f"scripts/{task.replace('-', '/')}.py", lambda p: add_our_flags(p, task)):
        try:
            opt = module.parse_opt()
        except AssertionError as e:  # some parse_opt check files themselves (val: check_yaml(--data))
            missing = str(e).partition("File not found: ")[2].strip()
            if not missing:
                raise
            flag = next((a for a, v in zip(argv, argv[1:]) if a.startswith("--") and v == missing), "a path")
            raise UserError(f"{flag} {missing} not found: check the path") from None
    ours = argparse.Namespace(**{k: opt.__dict__.pop(k, None) for k in OUR_FLAGS})
    return opt, ours


def execute(task: str, opt, callbacks=None, sampler: Optional[str] = None) -> None:
    """Call the package's own entry point for `task` with a parsed, checked `opt` (`sampler`: export's
    --sampler)."""
    module = importlib.import_module(TASKS[task])
    if task in TRAIN_TASKS:
        from yolov5.utils.callbacks import Callbacks
        module.main(opt, callbacks if callbacks is not None else Callbacks())
    elif task == "export":
        from .export_run import run_export
        run_export(module, opt, sampler)
    elif task in ("val", "detect"):
        # their main() re-parses the command line; hand it the namespace we already checked
        from .litert_runtime import litert_as_tflite_runtime
        parse_opt, module.parse_opt = module.parse_opt, lambda: opt
        try:
            with litert_as_tflite_runtime(getattr(opt, "weights", None)):
                module.main()
        finally:
            module.parse_opt = parse_opt
    else:  # segment val / predict take opt
        module.main(opt)


def main(task: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None, callbacks=None) -> int:
    """Run `task` ('train', 'val', 'detect', 'export', 'segment-train', 'segment-val',
    'segment-predict') with command-line `argv` (default sys.argv[1:]).

    Returns the exit status: 0 on success, 2 with `error: <one line>` on stderr for bad input.
    `callbacks` (train tasks): a yolov5 `Callbacks` to use instead of a fresh one.
    """
    from . import compat
    compat.apply_entrypoints()
    from . import data_yaml
    from .checkpoints import TRUST_ENV
    from .run_checks import check_run, error_line

    data_yaml.install()

    argv = sys.argv[1:] if argv is None else list(argv)
    trust_before = os.environ.get(TRUST_ENV)  # --trust-checkpoint holds for this run only
    try:
        echo: List[str] = []  # YOLOv5's options line, printed once the checks pass
        opt, ours = parse(task, argv, prog, echo=echo)
        check_run(opt, task, ours)
        from yolov5.utils.general import LOGGER
        for line in echo:
            LOGGER.info(line)
        execute(task, opt, callbacks, getattr(ours, "sampler", None))
    except (UserError, AssertionError) as e:  # YOLOv5 reports bad input with assert <condition>, '<message>'
        if error_line(e) is None:
            raise
        print(error_line(e), file=sys.stderr)
        return 2
    finally:
        if trust_before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = trust_before
    return 0
