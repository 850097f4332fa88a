"""Make a git clone of ultralytics/yolov5 (v7.0 or master) use this plugin, or stop using it (--undo).

    yolov5-dattn clone-setup ~/yolov5            # then, in the clone: python train.py --cfg .../yolov5n_c3_dattn.yaml
    yolov5-dattn clone-setup ~/yolov5 --undo     # the clone is byte-identical to before

See `yolov5_dattn.hosts.yolov5.clone` for the lines written (three, in models/__init__.py and utils/__init__.py).
"""
import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Set up (or undo) the clone given; returns the exit status (2 with `error: ...` for a bad folder)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("clone", help="the folder of the YOLOv5 clone (holds train.py, models/, utils/)")
    p.add_argument("--undo", action="store_true", help="remove the lines clone-setup wrote, restoring the files exactly")
    args = p.parse_args(argv)

    from yolov5_dattn.hosts.yolov5.clone import setup, undo
    from yolov5_dattn.errors import UserError
    try:
        changed = (undo if args.undo else setup)(args.clone)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verb = "removed the hook from" if args.undo else "added the hook to"
    if not changed:
        print(f"{args.clone}: nothing to do ({'no hook found' if args.undo else 'set up already'})")
    for path in changed:
        print(f"{verb} {path}")
    if changed and not args.undo:
        print(f"the clone's scripts now build and load C3_DAttention models; undo: {prog or 'yolov5-dattn clone-setup'} "
              f"{args.clone} --undo")
    return 0
