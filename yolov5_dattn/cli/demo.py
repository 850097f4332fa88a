"""The demo: generate the synthetic shapes data, train yolov5n_c3_dattn on it, validate, detect on the val
images and on a video, compare the model's cost with its YOLOv5 baseline, and say where everything is.

    yolov5-dattn demo                 # from any folder, installed from the wheel
    python scripts/demo.py            # the same from a checkout (or: make demo)

Every step runs a `yolov5-dattn` command in a fresh Python (`python -m yolov5_dattn make-demo-data`, train,
val, detect, compare), exactly as a user would. Offline, CPU, about 1.7 minutes on a 2-core machine (the
measurement: docs/performance.md); the output lands under --out (default ./demo of the current folder).
"""
import argparse
import os
import re
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from yolov5_dattn.shipped import CONFIGS

CFG = CONFIGS / "yolov5n_c3_dattn.yaml"
HYP = CONFIGS / "hyp.demo.yaml"
TARGET_MAP50 = 0.5


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line of `demo` (default sys.argv[1:])."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (data, runs, comparison)")
    p.add_argument("--imgsz", type=int, default=64, help="image size of the data, training and inference")
    p.add_argument("--n-train", type=int, default=512, help="training images to generate")
    p.add_argument("--n-val", type=int, default=64, help="validation images to generate")
    p.add_argument("--epochs", type=int, default=12, help="training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--workers", type=int, default=1, help="data-loader worker processes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per step (OMP_NUM_THREADS); 1 leaves the second core to the data loader "
                        "and avoids OpenMP spin-waiting, which slows training several-fold on a busy 2-core CPU")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    p.add_argument("--no-compare", action="store_true", help="skip the compare step")
    return p.parse_args(argv)


def run_step(name: str, args, env: dict, log: list) -> str:
    """Run `python -m yolov5_dattn <args>`, echoing its output live; returns the output. Exits on failure."""
    command = [sys.executable, "-m", "yolov5_dattn", *map(str, args)]
    print(f"\n=== {name}: yolov5-dattn {' '.join(command[3:])}", flush=True)
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        out.append(line)
    proc.wait()
    seconds = time.time() - start
    log.append((name, seconds))
    if proc.returncode:
        print(f"error: demo step '{name}' failed (exit {proc.returncode}); its output is above", file=sys.stderr)
        sys.exit(proc.returncode)
    return "".join(out)


def parse_map50(val_output: str) -> float:
    """mAP50 from val's summary row: `all  <images> <instances> P R mAP50 mAP50-95`."""
    rows = re.findall(r"^\s*all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", val_output, re.M)
    if not rows:
        raise ValueError("no 'all' row in val's output")
    return float(rows[-1][2])


def _python_path() -> List[str]:
    """PYTHONPATH entries the steps need to import this package: its parent folder when that is not a
    site-packages folder (a checkout run without installing), plus whatever PYTHONPATH already holds."""
    parent = Path(__file__).resolve().parents[2]
    sites = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    return [str(parent)] * (parent not in sites) + list(filter(None, [os.environ.get("PYTHONPATH", "")]))


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run every step; returns the exit status (2 with `error: <one line>` for bad flags)."""
    opt = parse_args(argv, prog)
    for flag, value, low in (("--imgsz", opt.imgsz, 64), ("--n-train", opt.n_train, 1), ("--n-val", opt.n_val, 1),
                             ("--epochs", opt.epochs, 1), ("--batch-size", opt.batch_size, 1),
                             ("--threads", opt.threads, 1), ("--workers", opt.workers, 0)):
        if value < low:
            print(f"error: {flag} {value} is too small: use {flag} {low} or more", file=sys.stderr)
            return 2
    if opt.imgsz % 32:
        print(f"error: --imgsz {opt.imgsz} is not a multiple of 32: use --imgsz {(opt.imgsz + 31) // 32 * 32}",
              file=sys.stderr)
        return 2
    out = opt.out.resolve()
    data, runs = out / "data", out / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": str(opt.threads), "PYTHONPATH": os.pathsep.join(_python_path())}
    log, start = [], time.time()
    size = ["--imgsz", opt.imgsz, "--device", "cpu"]

    run_step("data", ["make-demo-data", "--root", data, "--n-train", opt.n_train, "--n-val", opt.n_val,
                      "--imgsz", opt.imgsz, "--seed", opt.seed], env, log)
    det_yaml, video = data / "shapes_det.yaml", data / "video" / "shapes.mp4"
    val_images = data / "det" / "images" / "val"

    train_dir = runs / "train" / "demo"
    run_step("train", ["train", "--cfg", CFG, "--data", det_yaml, "--hyp", HYP, *size,
                       "--epochs", opt.epochs, "--batch-size", opt.batch_size, "--workers", opt.workers,
                       "--optimizer", "AdamW", "--seed", opt.seed, "--noval", "--noplots",
                       "--project", train_dir.parent, "--name", train_dir.name, "--exist-ok"], env, log)
    best = train_dir / "weights" / "best.pt"

    val_dir = runs / "val" / "demo"
    val_out = run_step("val", ["val", "--weights", best, "--data", det_yaml, *size,
                               "--workers", opt.workers, "--project", val_dir.parent, "--name", val_dir.name,
                               "--exist-ok"], env, log)
    map50 = parse_map50(val_out)

    detect_dir = runs / "detect"
    for name, source in (("images", val_images), ("video", video)):
        run_step(f"detect {name}", ["detect", "--weights", best, "--source", source, *size,
                                    "--line-thickness", 1, "--hide-conf",  # legible on 64-px images
                                    "--project", detect_dir, "--name", name, "--exist-ok"], env, log)

    compare_json = out / "compare.json"
    if not opt.no_compare:
        run_step("compare", ["compare", "--cfg", CFG, "--imgsz", opt.imgsz, "--threads", opt.threads,
                             "--json", compare_json, "--plot", out / "compare.png"], env, log)

    total = time.time() - start
    print("\n=== demo finished")
    print(f"  time        {total / 60:.1f} min (" + ", ".join(f"{n} {s:.0f}s" for n, s in log) + ")")
    verdict = "learned" if map50 >= TARGET_MAP50 else f"below the {TARGET_MAP50} target"
    print(f"  mAP50       {map50:.3f} on {opt.n_val} val images ({verdict})")
    print(f"  data        {data}  (data YAML {det_yaml})")
    print(f"  weights     {best}")
    print(f"  training    {train_dir}  (results.csv, opt.yaml)")
    print(f"  validation  {val_dir}  (PR curve, confusion matrix)")
    print(f"  detections  {detect_dir / 'images'}  and  {detect_dir / 'video' / video.name}")
    if compare_json.is_file():
        print(f"  cost        {compare_json}  and  {out / 'compare.png'}")
    return 0
