"""Write the synthetic shapes dataset (detection + segmentation), a short video and their data YAMLs.

    yolov5-dattn make-demo-data --root demo/data --n-train 256 --n-val 64 --imgsz 128
    yolov5-dattn make-demo-data --root demo/dense --preset dense --imgsz 160   # many small shapes, cluttered
    python scripts/make_demo_data.py --root demo/data ...       # the same, from a checkout

Deterministic: the same arguments always write the same files.
"""
import argparse
import sys
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line of `make-demo-data` (default sys.argv[1:])."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--root", default="demo/data", help="output folder (its generated sub-folders are replaced)")
    p.add_argument("--n-train", type=int, default=256, help="number of training images")
    p.add_argument("--n-val", type=int, default=64, help="number of validation images")
    p.add_argument("--imgsz", type=int, default=128, help="image side in pixels (square images)")
    p.add_argument("--seed", type=int, default=0, help="random seed; every file depends only on the arguments")
    p.add_argument("--no-video", action="store_true", help="do not write video/shapes.mp4")
    p.add_argument("--video-frames", type=int, default=30, help="number of video frames")
    p.add_argument("--fps", type=int, default=10, help="video frame rate")
    p.add_argument("--preset", default="shapes",
                   help="shapes: 1-4 large shapes on a smooth gradient (default); dense: 18-32 small shapes "
                        "(boxes about 4-10%% of the side) on cluttered, textured backgrounds")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Write the data and list what was written; returns the exit status (2 with `error: ...` for bad flags)."""
    args = parse_args(argv, prog)
    for flag, value, low in (("--n-train", args.n_train, 1), ("--n-val", args.n_val, 1), ("--imgsz", args.imgsz, 32),
                             ("--video-frames", args.video_frames, 1), ("--fps", args.fps, 1)):
        if value < low:
            print(f"error: {flag} {value} is too small: use {flag} {low} or more", file=sys.stderr)
            return 2
    from yolov5_dattn.demo_data import PRESETS, make_demo_data
    if args.preset not in PRESETS:
        print(f"error: --preset {args.preset} is unknown: use {' or '.join(f'--preset {p}' for p in PRESETS)}",
              file=sys.stderr)
        return 2

    out = make_demo_data(args.root, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, seed=args.seed,
                         video=not args.no_video, video_frames=args.video_frames, fps=args.fps, preset=args.preset)
    print(f"demo data: {args.n_train} train + {args.n_val} val images ({args.imgsz}x{args.imgsz}), "
          f"classes {', '.join(out['names'])}" + (f", preset {args.preset}" if args.preset != "shapes" else ""))
    for key in ("det_yaml", "seg_yaml", "val_images", "video"):
        if out[key] is not None:
            print(f"  {key:<10} {out[key]}")
    return 0
