#!/usr/bin/env python
"""Accuracy after export: mAP50 of each exported model, validated by its host, against PyTorch's.

For a trained YOLOv5 checkpoint (`--yolov5`) and a trained ultralytics one (`--ultralytics`), each format is
exported with this project's own commands into a folder of its own, then validated with the host's own `val`
on `--data`; the table prints the commands' mAP50 and mAP50-95 and the difference to the PyTorch row. Every
export and every val runs as its own `python -m yolov5_dattn ...` process (the commands a user runs); the
first "all" row of the val output is read.

    python scripts/deploy_accuracy.py --yolov5 v5/best.pt --ultralytics u/best.pt --data shapes_det.yaml \\
        --imgsz 128 --workdir /tmp/deploy-acc

Rows YOLOv5's val cannot load (NCNN folders, .mnn files: `DetectMultiBackend` has no backend for them) are
listed as such. Both hosts' val run a .pt at rectangular shapes (padded to stride multiples) and a fixed-size
export at the square --imgsz, so the TorchScript row (the same PyTorch model, validated as the exports are) is
each host's reference. `--rows` picks rows by the start of their label.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["main", "map_of"]

ALL_ROW = re.compile(r"^\s*all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", re.M)

# (row label, export arguments or None for the .pt itself, what the export writes, val can load it)
YOLOV5_ROWS = (
    ("PyTorch (.pt, rectangular val)", None, "best.pt", True),
    ("TorchScript (reference: square val)", ["--include", "torchscript"], "best.torchscript", True),
    ("ONNX, gather sampler", ["--include", "onnx", "--sampler", "gather"], "best.onnx", True),
    ("OpenVINO (fp32)", ["--include", "openvino"], "best_openvino_model", True),
    ("NCNN", ["--include", "ncnn"], "best_ncnn_model", False),
    ("MNN", ["--include", "mnn"], "best.mnn", False),
)
ULTRALYTICS_ROWS = (
    ("PyTorch (.pt, rectangular val)", None, "best.pt", True),
    ("TorchScript (reference: square val)", ["format=torchscript"], "best.torchscript", True),
    ("ONNX, gather sampler", ["format=onnx", "sampler=gather"], "best.onnx", True),
    ("OpenVINO (fp32)", ["format=openvino"], "best_openvino_model", True),
    ("NCNN", ["format=ncnn"], "best_ncnn_model", True),
    ("MNN", ["format=mnn"], "best.mnn", True),
    ("OpenVINO int8 (NNCF, data=)", ["format=openvino", "quantize=8", "data={data}"], "best_int8_openvino_model",
     True),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yolov5", type=Path, help="a trained YOLOv5 checkpoint (yolov5-dattn train)")
    parser.add_argument("--ultralytics", type=Path, help="a trained ultralytics checkpoint (yolov5-dattn yolo train)")
    parser.add_argument("--data", type=Path, required=True, help="data YAML whose val split is validated")
    parser.add_argument("--imgsz", type=int, default=128, help="export and val size (square)")
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the exports and val runs")
    parser.add_argument("--rows", nargs="+", default=None, help="only the rows whose label starts with one of these")
    return parser.parse_args(argv)


def map_of(output: str) -> Optional[Tuple[float, float]]:
    """(mAP50, mAP50-95) from the first 'all' row of a val's output, or None."""
    found = ALL_ROW.search(output)
    return (float(found.group(3)), float(found.group(4))) if found else None


def _run(args: Sequence[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run([sys.executable, "-m", "yolov5_dattn", *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True)
    out = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{out[-3000:]}")
    return out


def host_rows(host: str, weights: Path, data: Path, imgsz: int, workdir: Path, only=None) -> List[tuple]:
    """One (host, label, mAP50, mAP50-95, command) row per format of `host` (`only`: label starts); mAP None where
    val cannot load it."""
    rows = []
    table = [row for row in (YOLOV5_ROWS if host == "YOLOv5" else ULTRALYTICS_ROWS)
             if not only or any(row[0].startswith(o) for o in only)]
    for label, export, artefact, loadable in table:
        folder = workdir / host / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        pt = folder / "best.pt"
        shutil.copyfile(weights, pt)
        if export is not None:
            export = [a.format(data=data) for a in export]
            if host == "YOLOv5":
                _run(["export", "--weights", pt, "--imgsz", imgsz, "--device", "cpu", *export], folder)
            else:
                _run(["yolo", "export", f"model={pt}", f"imgsz={imgsz}", "device=cpu", *export], folder)
        model = folder / artefact
        assert model.exists(), model
        if not loadable:
            rows.append((host, label, None, None, "val cannot load it (DetectMultiBackend)"))
            continue
        if host == "YOLOv5":
            command = ["val", "--weights", model, "--data", data, "--imgsz", imgsz, "--device", "cpu",
                       "--project", folder / "runs", "--name", "val", "--exist-ok"]
        else:
            command = ["yolo", "val", f"model={model}", f"data={data}", f"imgsz={imgsz}", "device=cpu", "batch=1",
                       "plots=False", f"project={folder / 'runs'}", "name=val", "exist_ok=True"]
        found = map_of(_run(command, folder))
        if found is None:
            raise RuntimeError(f"no 'all' row in the output of {' '.join(map(str, command))}")
        rows.append((host, label, *found, " ".join(map(str, (export or [])))))
        print(f"{host} {label}: mAP50 {found[0]:.4f}, mAP50-95 {found[1]:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    data = args.data.resolve()
    rows = []
    for host, weights in (("YOLOv5", args.yolov5), ("ultralytics", args.ultralytics)):
        if weights is not None:
            rows += host_rows(host, weights.resolve(), data, args.imgsz, workdir, args.rows)
    print("\n| host | model | export arguments | mAP50 | mAP50-95 | mAP50 − reference |")
    print("|---|---|---|---:|---:|---:|")
    for host in ("YOLOv5", "ultralytics"):
        mine = [r for r in rows if r[0] == host]
        if not mine:
            continue
        reference = next((r for r in mine if r[1].startswith("TorchScript")), None)
        for _, label, m50, m, command in mine:
            if m50 is None:
                print(f"| {host} | {label} | | — | — | {command} |")
            else:
                delta = f"{m50 - reference[2]:+.4f}" if reference else "—"
                print(f"| {host} | {label} | `{command}` | {m50:.4f} | {m:.4f} | {delta} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
