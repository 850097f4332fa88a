"""What does the attention cost? A model against its stock baseline: parameters, GFLOPs (the thop figure and a
full count that sees the attention), latency, peak memory of a forward and a training step, and each
DAttention layer's share. YOLOv5 configs are compared with YOLOv5's model of the same scale and task,
ultralytics ones (configs/ultralytics/, scale letter in the name) with ultralytics' own YAML of the same
family, scale and task (yolo11n-c3k2-dattn -> yolo11n.yaml, rtdetr-l-aifi-dattn -> rtdetr-l.yaml).

    yolov5-dattn compare --cfg yolov5l_c3_dattn.yaml --imgsz 640 --json out.json --plot out.png
    yolov5-dattn compare --cfg configs/ultralytics/yolo11n-c3k2-dattn.yaml --imgsz 640 --train-step
    python scripts/compare.py --cfg configs/yolov5l_c3_dattn.yaml ...     # the same, from a checkout
    make docs-compare                                                    # regenerates docs/compare.{json,png}

The JSON and the plot carry `commit` (the checkout's short hash, else the package version) and `date`.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line of `compare` (default sys.argv[1:])."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", nargs="+", required=True,
                        help="model YAML(s) to compare, each against its baseline: a path or a shipped name "
                             "(e.g. yolov5s_c3_dattn.yaml, yolo11n-c3k2-dattn.yaml); all YOLOv5 or all ultralytics")
    parser.add_argument("--baseline", default=None,
                        help="baseline model YAML, a path or a name from the yolov5 package (yolov5s.yaml, "
                             "yolov5s-seg.yaml) or the ultralytics one (yolo11n.yaml); default: the same-scale "
                             "YOLOv5 model of the same task as --cfg, for ultralytics configs ultralytics' model of "
                             "the same family, scale and task")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640],
                        help="image size: one value (square) or h w; a multiple of the largest stride (32)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the measured input")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or N (a CUDA device index)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the measurements (default: torch's default here)")
    parser.add_argument("--runs", type=int, default=10, help="timed forwards per model (latency = their median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards before timing")
    parser.add_argument("--train-step", action="store_true",
                        help="also time a training step (forward + backward, train mode; same --runs, models in "
                             "turns) and print its ratio to the baseline")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurements (on CPU they run in a separate process)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results to this JSON file (stamped with the commit and date)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="also write a PNG bar chart (GFLOPs conv/attention, latency, memory) to this file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Measure and print the comparison; returns the exit status (2 with `error: <one line>` for bad input)."""
    opt = parse_args(argv, prog)
    import torch

    from yolov5_dattn.analysis.comparison import compare, format_table
    from yolov5_dattn.errors import UserError

    try:
        if opt.threads is not None:
            if opt.threads < 1:
                raise UserError(f"--threads {opt.threads}: must be at least 1")
            torch.set_num_threads(opt.threads)
        if len(opt.imgsz) > 2:
            raise UserError(f"--imgsz {' '.join(map(str, opt.imgsz))}: give one size or two (h w)")
        for flag, path in (("--json", opt.json), ("--plot", opt.plot)):
            if path is not None and path.is_dir():
                raise UserError(f"{flag} {path}: is a folder: give a file name")
        result = compare(opt.cfg, opt.baseline, opt.imgsz, opt.batch, opt.device, opt.runs, opt.warmup,
                         memory=not opt.no_memory, train_step=opt.train_step)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if opt.json:
        opt.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = opt.json.with_name(opt.json.name + ".part")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, opt.json)  # never a half-written file
        print(f"\nwrote {opt.json}")
    if opt.plot:
        from yolov5_dattn.analysis.compare_plot import plot_comparison
        print(f"wrote {plot_comparison(result, opt.plot)}")
    return 0
