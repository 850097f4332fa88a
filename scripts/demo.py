#!/usr/bin/env python
"""The demo: generate the synthetic shapes data, train yolov5n_c3_dattn on it, validate, detect on the val
images and on a video, compare the model's cost with its YOLOv5 baseline, and say where everything is.

    python scripts/demo.py            # or: make demo

Every step runs one of this repository's scripts in a fresh Python (scripts/make_demo_data.py,
train.py, val.py, detect.py, compare.py), exactly as a user would. Offline, CPU, about 10 minutes on a
2-core machine; the output lands under --out (default ./demo).
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"
HYP = REPO / "configs" / "hyp.demo.yaml"
TARGET_MAP50 = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
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
    p.add_argument("--no-compare", action="store_true", help="skip scripts/compare.py")
    return p.parse_args(argv)


def run_step(name: str, args, env: dict, log: list) -> str:
    """Run `python <args>`, echoing its output live; returns the output. Exits on failure."""
    print(f"\n=== {name}: {' '.join(map(str, args))}", flush=True)
    start = time.time()
    proc = subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, bufsize=1)
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
    """mAP50 from val.py's summary row: `all  <images> <instances> P R mAP50 mAP50-95`."""
    rows = re.findall(r"^\s*all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", val_output, re.M)
    if not rows:
        raise ValueError("no 'all' row in val.py's output")
    return float(rows[-1][2])


def main(argv=None) -> int:
    opt = parse_args(argv)
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
    env = {**os.environ, "OMP_NUM_THREADS": str(opt.threads), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    log, start = [], time.time()
    size = ["--imgsz", opt.imgsz, "--device", "cpu"]

    run_step("data", [SCRIPTS / "make_demo_data.py", "--root", data, "--n-train", opt.n_train, "--n-val", opt.n_val,
                      "--imgsz", opt.imgsz, "--seed", opt.seed], env, log)
    det_yaml, video, val_images = data / "shapes_det.yaml", data / "video" / "shapes.mp4", data / "det" / "images" / "val"

    train_dir = runs / "train" / "demo"
    run_step("train", [SCRIPTS / "train.py", "--cfg", CFG, "--data", det_yaml, "--hyp", HYP, *size,
                       "--epochs", opt.epochs, "--batch-size", opt.batch_size, "--workers", opt.workers,
                       "--optimizer", "AdamW", "--seed", opt.seed, "--noval", "--noplots",
                       "--project", train_dir.parent, "--name", train_dir.name, "--exist-ok"], env, log)
    best = train_dir / "weights" / "best.pt"

    val_dir = runs / "val" / "demo"
    val_out = run_step("val", [SCRIPTS / "val.py", "--weights", best, "--data", det_yaml, *size,
                               "--workers", opt.workers, "--project", val_dir.parent, "--name", val_dir.name,
                               "--exist-ok"], env, log)
    map50 = parse_map50(val_out)

    detect_dir = runs / "detect"
    for name, source in (("images", val_images), ("video", video)):
        run_step(f"detect {name}", [SCRIPTS / "detect.py", "--weights", best, "--source", source, *size,
                                    "--line-thickness", 1, "--hide-conf",  # legible on 64-px images
                                    "--project", detect_dir, "--name", name, "--exist-ok"], env, log)

    compare_json = out / "compare.json"
    if not opt.no_compare and (SCRIPTS / "compare.py").is_file():
        run_step("compare", [SCRIPTS / "compare.py", "--cfg", CFG, "--imgsz", opt.imgsz, "--threads", opt.threads,
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


if __name__ == "__main__":
    sys.exit(main())
