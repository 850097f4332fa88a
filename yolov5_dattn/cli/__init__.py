"""`yolov5-dattn` (also `python -m yolov5_dattn`): YOLOv5's commands with our modules, and ours.

    yolov5-dattn train --cfg yolov5n_c3_dattn.yaml --data demo_shapes.yaml --imgsz 64 --epochs 1
    yolov5-dattn segment predict --weights best.pt --source images/
    yolov5-dattn configs

Like the `yolov5` package's own command, `train|val|detect|export` and `segment train|val|predict` take
YOLOv5's flags (`yolov5-dattn train --help` lists them) and run through `yolov5_dattn.hosts.yolov5.entrypoint`, exactly
as the checkout's `scripts/*.py` do. Every --cfg/--data/--hyp also takes a shipped name (`yolov5_dattn.shipped`).
"""
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import policy

policy.apply()  # every command runs under our policy (offline, safe loading); importing the plugin alone does not

PROG = "yolov5-dattn"
DESCRIPTION = "YOLOv5's commands with DAttention models, offline, and yolov5-dattn's own."

# command -> one-line help
YOLOV5_COMMANDS: Dict[str, str] = {
    "train": "train a model (YOLOv5's train.py flags; --cfg may be a shipped name such as yolov5n_c3_dattn.yaml)",
    "val": "validate a detection checkpoint on a dataset (YOLOv5's val.py flags)",
    "detect": "detect objects in images, videos, streams (YOLOv5's detect.py flags)",
    "export": "export a checkpoint to ONNX, TorchScript, ... (YOLOv5's export.py flags; ONNX needs opset >= 16)",
}
SEGMENT_COMMANDS: Dict[str, str] = {
    "train": "train a segmentation model (YOLOv5's segment/train.py flags)",
    "val": "validate a segmentation checkpoint (YOLOv5's segment/val.py flags)",
    "predict": "segment images, videos, streams (YOLOv5's segment/predict.py flags)",
}
OUR_COMMANDS: Dict[str, str] = {
    "segment": "segmentation: segment train|val|predict",
    "compare": "cost of a model against its YOLOv5 baseline: parameters, GFLOPs, latency, memory",
    "ablate": "does the attention help? train each --cfg and its stock YOLOv5 baseline, one accuracy/cost table",
    "visualize": "draw where the deformable attention samples, over images or a video",
    "demo": "the demo: synthetic data, train, val, detect, compare, under ./demo",
    "make-demo-data": "write the synthetic shapes dataset (detection + segmentation) and a video",
    "make-real-data": "write a real labelled dataset (tree crowns, deepforest's sample images) from a wheel/sdist",
    "configs": "list the shipped model / data / hyperparameter YAMLs, with parameter counts",
    "clone-setup": "make a git clone of ultralytics/yolov5 (v7.0 or master) use these modules (--undo reverses it)",
    "changes": "list every run-time change made to YOLOv5 (what, why, which line) or, --host ultralytics, to ultralytics",
    "registry": "list the modules registered into YOLOv5's (or, --host ultralytics, ultralytics') parse_model",
    "yolo": "ultralytics' yolo command (YOLOv8/11/26, RT-DETR) with DAttention blocks: yolo train model=... key=value",
}


def _usage(commands: Dict[str, str], prog: str, what: str) -> str:
    width = max(map(len, commands))
    lines = [f"usage: {prog} COMMAND [flags]   ({prog} COMMAND --help lists a command's flags)", "", what, "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in commands.items()]
    return "\n".join(lines) + "\n"


def _run_task(task: str, argv: Sequence[str], prog: str) -> int:
    """One of YOLOv5's tasks through our runner; train tasks report what a --weights transfer loaded."""
    from yolov5_dattn.hosts.yolov5 import entrypoint, transfer
    if task in entrypoint.TRAIN_TASKS:
        transfer.install()  # --weights <baseline.pt>: print what was transferred and what starts fresh
    return entrypoint.main(task, list(argv), prog=prog)


def _dispatch(argv: List[str], commands: Dict[str, str], prog: str, what: str,
              run: Callable[[str, List[str], str], int]) -> int:
    """`argv[0]` picks a command of `commands`; --help prints the list; anything else is one error line."""
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage(commands, prog, what))
        return 0
    if not argv or argv[0] not in commands:
        given = f"{argv[0]}: unknown command" if argv else "no command given"
        print(f"error: {prog} {given}: use one of {', '.join(commands)} ({prog} --help says what each does)",
              file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    return run(name, rest, f"{prog} {name}")


def _run_segment(argv: List[str], prog: str) -> int:
    """`segment train|val|predict ...`."""
    return _dispatch(argv, SEGMENT_COMMANDS, prog, "YOLOv5's segmentation commands with DAttention models.",
                     lambda sub, rest, sub_prog: _run_task(f"segment-{sub}", rest, sub_prog))


def _run_command(name: str, argv: List[str], prog: str) -> int:
    """Run top-level command `name` with its flags `argv`."""
    if name in YOLOV5_COMMANDS:
        return _run_task(name, argv, prog)
    if name == "segment":
        return _run_segment(argv, prog)
    if name == "configs":
        return configs_command(argv, prog)
    if name == "yolo":
        from . import yolo
        return yolo.main(argv, prog=prog)
    if name in ("changes", "registry"):
        from . import changes
        return (changes.changes_main if name == "changes" else changes.registry_main)(argv, prog=prog)
    from . import ablate, clone_setup, compare, demo, make_demo_data, make_real_data, visualize
    module = {"compare": compare, "visualize": visualize, "demo": demo, "make-demo-data": make_demo_data,
              "make-real-data": make_real_data, "clone-setup": clone_setup, "ablate": ablate}[name]
    return module.main(argv, prog=prog)


# ---- configs ------------------------------------------------------------------------------------------
def config_rows() -> List[Tuple[str, str, str]]:
    """(name, kind, detail) for every shipped YAML: models built (parse_model) for their parameter count,
    DAttention layers and head; data YAMLs with their classes; hyperparameter YAMLs with lr0."""
    import yaml
    from yolov5.models.yolo import parse_model

    from yolov5_dattn.nn.dattention import DAttention
    from yolov5_dattn.hosts.yolov5.quiet import quiet_yolov5
    from yolov5_dattn.shipped import CONFIGS, list_configs

    rows = []
    for kind in ("cfg", "data", "hyp"):
        for name in list_configs(kind):
            d = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
            if kind == "cfg":
                with quiet_yolov5():
                    model = parse_model(d, ch=[3])[0]
                params = sum(p.numel() for p in model.parameters())
                n_attn = sum(isinstance(m, DAttention) for m in model.modules())
                head = str(d["head"][-1][2]).lower()
                detail = f"{params:>12,}  {n_attn} DAttention, {head}, nc={d['nc']}"
            elif kind == "data":
                names = d["names"].values() if isinstance(d["names"], dict) else d["names"]
                detail = f"{len(names)} classes ({', '.join(map(str, names))}), path: {d.get('path', '.')}"
            else:
                detail = f"{len(d)} hyperparameters (lr0={d['lr0']}, mosaic={d.get('mosaic')})"
            rows.append((name, {"cfg": "model", "data": "data", "hyp": "hyp"}[kind], detail))
    from yolov5_dattn.shipped import ULTRALYTICS
    for name in list_configs(ULTRALYTICS):
        d = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
        rows.append((name, "yolo", f"ultralytics model (yolov5-dattn yolo ... model=), scales "
                                   f"{' '.join(d['scales'])}"))
    return rows


def configs_command(argv: Sequence[str], prog: str) -> int:
    """`configs`: print the shipped YAMLs as a table (models with their parameter counts)."""
    import argparse
    parser = argparse.ArgumentParser(prog=prog, description="List the YAMLs shipped with yolov5-dattn; pass any "
                                     "of these names to --cfg / --data / --hyp (a path of the same name wins).")
    parser.parse_args(list(argv))
    rows = config_rows()
    width = max(len(name) for name, _, _ in rows)
    print(f"{'name':<{width}}  {'kind':<5}  {'parameters':>12}  details")
    for name, kind, detail in rows:
        if kind != "model":
            detail = f"{'':>12}  {detail}"
        print(f"{name:<{width}}  {kind:<5}  {detail}")
    from yolov5_dattn.shipped import CONFIGS
    print(f"\n(in {CONFIGS})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `yolov5-dattn <command> ...` with `argv` (default sys.argv[1:]); returns the exit status
    (0 on success, 2 with `error: <one line>` on stderr for bad input or an unknown command)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {**YOLOV5_COMMANDS, **OUR_COMMANDS}
    return _dispatch(argv, commands, PROG, DESCRIPTION, _run_command)
