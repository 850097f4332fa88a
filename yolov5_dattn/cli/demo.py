"""The demo: generate the synthetic shapes data, train yolov5n_c3_dattn on it, validate, detect on the val
images and on a video, compare the model's cost with its YOLOv5 baseline, and say where everything is.

    yolov5-dattn demo                        # from any folder, installed from the wheel
    python scripts/demo.py                   # the same from a checkout (or: make demo)
    yolov5-dattn demo --host ultralytics     # the same story with yolo11n-c3k2-dattn through `yolov5-dattn yolo`

Every step runs a `yolov5-dattn` command in a fresh Python (`python -m yolov5_dattn make-demo-data`, train,
val, detect, compare), exactly as a user would. Offline, CPU, about 1.7 minutes on a 2-core machine (the
measurement: docs/performance.md); the output lands under --out (default ./demo of the current folder).
With `--host ultralytics` the steps are `yolo train`, `yolo val`, `yolo predict` (images, video) with
ultralytics' own flags and run folders (`<out>/runs/detect/train`, `val`, `predict`, `predict-video`), at
imgsz 160 so that the attention's P5 map is 5x5.
"""
import argparse
import os
import re
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from yolov5_dattn.shipped import CONFIGS

CFG = CONFIGS / "yolov5n_c3_dattn.yaml"
HYP = CONFIGS / "hyp.demo.yaml"
TARGET_MAP50 = 0.5
# ultralytics reads the scale letter from the file name (yolo11-c3k2-dattn.yaml at scale n): no such file exists
U_CFG = CONFIGS / "ultralytics" / "yolo11n-c3k2-dattn.yaml"
HOSTS = ("yolov5", "ultralytics")
# per-host defaults of the flags whose default is None; P5 of yolo11n is imgsz / 32, 5x5 at 160
HOST_DEFAULTS = {"yolov5": {"imgsz": 64, "epochs": 12}, "ultralytics": {"imgsz": 160, "epochs": 10}}
U_RUNS = ("train", "val", "predict", "predict-video")  # the run folders of --host ultralytics under runs/detect


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the per-host ones (None here; their help text gives them)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line of `demo` (default sys.argv[1:])."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=_Formatter)
    p.add_argument("--host", choices=HOSTS, default="yolov5",
                   help="yolov5: yolov5n_c3_dattn with YOLOv5's train/val/detect; ultralytics: yolo11n-c3k2-dattn "
                        "with `yolov5-dattn yolo train/val/predict`")
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (data, runs, comparison)")
    p.add_argument("--imgsz", type=int, default=None,
                   help="image size of the data, training and inference (default: 64 for yolov5, 160 for "
                        "ultralytics)")
    p.add_argument("--n-train", type=int, default=512, help="training images to generate")
    p.add_argument("--n-val", type=int, default=64, help="validation images to generate")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: 12 for yolov5, 10 for ultralytics)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--workers", type=int, default=1, help="data-loader worker processes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per step (OMP_NUM_THREADS); 1 leaves the second core to the data loader "
                        "and avoids OpenMP spin-waiting, which slows training several-fold on a busy 2-core CPU "
                        "(ultralytics' training sets its own torch thread count: the cores less one, 8 at most)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    p.add_argument("--no-compare", action="store_true", help="skip the compare step")
    p.add_argument("--min-map50", type=float, default=None,
                   help=f"exit 1 with an error line when val's mAP50 is below this, after the summary (default: "
                        f"{TARGET_MAP50} for ultralytics; none for yolov5, which prints its verdict only); 0 turns "
                        f"the check off")
    opt = p.parse_args(argv)
    for key, value in HOST_DEFAULTS[opt.host].items():
        if getattr(opt, key) is None:
            setattr(opt, key, value)
    return opt


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


def parse_val_row(val_output: str) -> Tuple[float, float]:
    """(mAP50, mAP50-95) from val's summary row `all  <images> <instances> P R mAP50 mAP50-95` (YOLOv5's and
    ultralytics' val print the same row). Progress bars' carriage returns and ANSI codes are ignored."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", val_output).replace("\r", "\n")
    number = r"(\d[\d.]*(?:e[-+]?\d+)?)"  # YOLOv5 prints small values as 3.11e-05
    rows = re.findall(rf"^\s*all\s+\d+\s+\d+\s+{number}\s+{number}\s+{number}\s+{number}\s*$", text, re.M)
    if not rows:
        raise ValueError("no 'all' row in val's output")
    return float(rows[-1][2]), float(rows[-1][3])


def parse_map50(val_output: str) -> float:
    """mAP50 from val's summary row: `all  <images> <instances> P R mAP50 mAP50-95`."""
    return parse_val_row(val_output)[0]


def check_target(map50: float, target: Optional[float]) -> Optional[str]:
    """The `error:` line when mAP50 is below `target` (None or 0: no check), else None."""
    if not target or map50 >= target:
        return None
    return (f"error: demo: mAP50 {map50:.3f} is below the target {target}: the model did not learn enough; "
            f"train longer (--epochs) or on more images (--n-train), or set --min-map50 0 to skip this check")


def print_summary(title: str, start: float, log: list, metric: str, map50: float, n_val: int, rows) -> None:
    """The closing block: time per step, mAP50 with its verdict, then `(label, where)` rows."""
    total = time.time() - start
    print(f"\n=== {title}")
    print(f"  time        {total / 60:.1f} min (" + ", ".join(f"{n} {s:.0f}s" for n, s in log) + ")")
    verdict = "learned" if map50 >= TARGET_MAP50 else f"below the {TARGET_MAP50} target"
    print(f"  mAP50       {metric} on {n_val} val images ({verdict})")
    for label, where in rows:
        print(f"  {label:<11} {where}")


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
    if opt.min_map50 is not None and not 0 <= opt.min_map50 <= 1:
        print(f"error: --min-map50 {opt.min_map50} is not in [0, 1]: give a mAP50 such as {TARGET_MAP50}, or 0",
              file=sys.stderr)
        return 2
    if opt.imgsz % 32:
        print(f"error: --imgsz {opt.imgsz} is not a multiple of 32: use --imgsz {(opt.imgsz + 31) // 32 * 32}",
              file=sys.stderr)
        return 2
    out = opt.out.resolve()
    data, runs = out / "data", out / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": str(opt.threads), "PYTHONPATH": os.pathsep.join(_python_path())}
    log, start = [], time.time()
    if opt.host == "ultralytics":
        return _demo_ultralytics(opt, out, env, log, start)
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
    failed = check_target(map50, opt.min_map50)

    detect_dir = runs / "detect"
    for name, source in (("images", val_images), ("video", video)):
        run_step(f"detect {name}", ["detect", "--weights", best, "--source", source, *size,
                                    "--line-thickness", 1, "--hide-conf",  # legible on 64-px images
                                    "--project", detect_dir, "--name", name, "--exist-ok"], env, log)

    compare_json = out / "compare.json"
    if not opt.no_compare:
        run_step("compare", ["compare", "--cfg", CFG, "--imgsz", opt.imgsz, "--threads", opt.threads,
                             "--json", compare_json, "--plot", out / "compare.png"], env, log)

    print_summary("demo finished", start, log, f"{map50:.3f}", map50, opt.n_val, [
        ("data", f"{data}  (data YAML {det_yaml})"), ("weights", best),
        ("training", f"{train_dir}  (results.csv, opt.yaml)"), ("validation", f"{val_dir}  (PR curve, confusion matrix)"),
        ("detections", f"{detect_dir / 'images'}  and  {detect_dir / 'video' / video.name}"),
        *([("cost", f"{compare_json}  and  {out / 'compare.png'}")] if compare_json.is_file() else [])])
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return 0


def _demo_ultralytics(opt: argparse.Namespace, out: Path, env: dict, log: list, start: float) -> int:
    """The demo's steps through `yolov5-dattn yolo` (ultralytics' CLI with our blocks) on yolo11n-c3k2-dattn;
    outputs in ultralytics' run folders under `<out>/runs/detect`. Returns the exit status."""
    import shutil

    data, detect = out / "data", out / "runs" / "detect"
    target = TARGET_MAP50 if opt.min_map50 is None else opt.min_map50
    for name in U_RUNS:  # a rerun starts clean: ultralytics appends to an existing results.csv
        shutil.rmtree(detect / name, ignore_errors=True)
    common = [f"imgsz={opt.imgsz}", "device=cpu", f"project={detect}", "exist_ok=True"]

    run_step("data", ["make-demo-data", "--root", data, "--n-train", opt.n_train, "--n-val", opt.n_val,
                      "--imgsz", opt.imgsz, "--seed", opt.seed], env, log)
    det_yaml, video = data / "shapes_det.yaml", data / "video" / "shapes.mp4"
    val_images = data / "det" / "images" / "val"

    train_dir = detect / "train"
    run_step("train", ["yolo", "train", f"model={U_CFG}", f"data={det_yaml}", *common, f"epochs={opt.epochs}",
                       f"batch={opt.batch_size}", f"workers={opt.workers}", f"seed={opt.seed}", "deterministic=True",
                       "plots=False", "name=train"], env, log)
    best = train_dir / "weights" / "best.pt"

    val_dir = detect / "val"
    val_out = run_step("val", ["yolo", "val", f"model={best}", f"data={det_yaml}", *common,
                               f"batch={opt.batch_size}", f"workers={opt.workers}", "name=val"], env, log)
    map50, map50_95 = parse_val_row(val_out)

    for name, source, folder in (("images", val_images, "predict"), ("video", video, "predict-video")):
        run_step(f"predict {name}", ["yolo", "predict", f"model={best}", f"source={source}", *common,
                                     "line_width=1", "show_conf=False",  # legible on small images
                                     f"name={folder}"], env, log)
    predicted_video = next(iter(sorted((detect / "predict-video").glob(video.stem + ".*"))), None)

    compare_json = out / "compare.json"
    if not opt.no_compare:
        run_step("compare", ["compare", "--cfg", U_CFG, "--imgsz", opt.imgsz, "--threads", opt.threads,
                             "--json", compare_json, "--plot", out / "compare.png"], env, log)

    print_summary("demo finished (host ultralytics, yolo11n-c3k2-dattn)", start, log,
                  f"{map50:.3f} (mAP50-95 {map50_95:.3f})", map50, opt.n_val, [
                      ("data", f"{data}  (data YAML {det_yaml})"), ("weights", best),
                      ("training", f"{train_dir}  (results.csv, args.yaml)"),
                      ("validation", f"{val_dir}  (PR curves, confusion matrix)"),
                      ("detections", f"{detect / 'predict'}  and  {predicted_video or detect / 'predict-video'}"),
                      *([("cost", f"{compare_json}  and  {out / 'compare.png'}")] if compare_json.is_file() else [])])
    failed = check_target(map50, target)
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return 0
