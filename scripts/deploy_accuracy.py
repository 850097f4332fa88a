#!/usr/bin/env python
"""Accuracy after export: mAP50 of each exported model, validated by its host, against PyTorch's.

For a trained YOLOv5 checkpoint (`--yolov5`) and a trained ultralytics one (`--ultralytics`), each format is
exported with this project's own commands into a folder of its own, then validated with the host's own `val`
on `--data`; the table prints the commands' mAP50 and mAP50-95 and the difference to the PyTorch row. Every
export and every val runs as its own `python -m yolov5_dattn ...` process (the commands a user runs); the
first "all" row of the val output is read.

    python scripts/deploy_accuracy.py --yolov5 v5/best.pt --ultralytics u/best.pt --data shapes_det.yaml \\
        --imgsz 128 --workdir /tmp/deploy-acc

YOLOv5's `DetectMultiBackend` has no backend for NCNN folders or .mnn files, so those two rows run YOLOv5's
own val loop (`val.run`: letterboxed square images, NMS, metrics, as for an export) with the runtime standing
in for the model (`--val-runtime`: NCNN with fp32 options, MNN at high precision). Both hosts' val run a .pt at rectangular shapes (padded to stride multiples) and a fixed-size
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
from typing import Callable, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

__all__ = ["main", "map_of"]

ALL_ROW = re.compile(r"^\s*all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", re.M)

# (row label, export arguments or None for the .pt itself, what the export writes, val can load it)
YOLOV5_ROWS = (
    ("PyTorch (.pt, rectangular val)", None, "best.pt", True),
    ("TorchScript (reference: square val)", ["--include", "torchscript"], "best.torchscript", True),
    ("ONNX, gather sampler", ["--include", "onnx", "--sampler", "gather"], "best.onnx", True),
    ("OpenVINO (fp32)", ["--include", "openvino"], "best_openvino_model", True),
    ("NCNN (YOLOv5's val loop, NCNN as the model)", ["--include", "ncnn"], "best_ncnn_model", False),
    ("MNN (YOLOv5's val loop, MNN as the model)", ["--include", "mnn"], "best.mnn", False),
    ("LiteRT (TFLite) fp32", ["--include", "tflite"], "best-fp32.tflite", True),
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
    ("LiteRT (TFLite) fp32", ["format=litert"], "best.tflite", True),
    ("LiteRT (TFLite) int8 (data=)", ["format=litert", "quantize=8", "data={data}"], "best_int8.tflite", True),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yolov5", type=Path, help="a trained YOLOv5 checkpoint (yolov5-dattn train)")
    parser.add_argument("--val-runtime", type=Path, default=None,
                        help="validate this YOLOv5 NCNN folder or .mnn file with YOLOv5's val loop and exit")
    parser.add_argument("--ultralytics", type=Path, help="a trained ultralytics checkpoint (yolov5-dattn yolo train)")
    parser.add_argument("--data", type=Path, required=True, help="data YAML whose val split is validated")
    parser.add_argument("--imgsz", type=int, default=128, help="export and val size (square)")
    parser.add_argument("--workdir", type=Path, default=Path("deploy-accuracy"), help="folder for the exports and "
                        "val runs")
    parser.add_argument("--rows", nargs="+", default=None, help="only the rows whose label starts with one of these")
    return parser.parse_args(argv)


def map_of(output: str) -> Optional[Tuple[float, float]]:
    """(mAP50, mAP50-95) from the first 'all' row of a val's output, or None."""
    found = ALL_ROW.search(output)
    return (float(found.group(3)), float(found.group(4))) if found else None


def _runtime_call(model: Path) -> Callable:
    """(1, 3, H, W) float array -> YOLOv5's raw output (1, anchors, 5 + nc), by NCNN (a folder) or MNN (.mnn)."""
    import numpy as np
    if model.suffix == ".mnn":
        import MNN
        runtime = MNN.nn.create_runtime_manager(({"precision": "high", "backend": "CPU", "numThread": 1},))
        net = MNN.nn.load_module_from_file(str(model), [], [], runtime_manager=runtime, rearrange=True)

        def mnn(image):
            out = net.onForward([MNN.expr.const(np.ascontiguousarray(image), list(image.shape), MNN.expr.NCHW)])[0]
            return np.array(MNN.expr.convert(out, MNN.expr.NCHW).read())
        return mnn
    import ncnn
    net = ncnn.Net()
    for option in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    net.load_param(str(model / "model.ncnn.param"))
    net.load_model(str(model / "model.ncnn.bin"))

    def ncnn_call(image):
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(np.ascontiguousarray(image[0])).clone())
        return np.array(ex.extract("out0")[1])[None]
    return ncnn_call


def val_in_runtime(model: Path, data: Path, imgsz: int) -> Tuple[float, float]:
    """(mAP50, mAP50-95) of a YOLOv5 NCNN folder or .mnn file on `data`'s val split, by YOLOv5's `val.run` with
    the runtime as its model (batch 1, letterboxed to imgsz × imgsz, as YOLOv5 validates an export)."""
    import tempfile

    import torch

    import yolov5_dattn.hosts.yolov5  # noqa: F401  (YOLOv5 on today's stack)
    from yolov5 import val
    from yolov5.utils.dataloaders import create_dataloader
    from yolov5.utils.general import check_dataset
    call = _runtime_call(model)
    checked = check_dataset(str(data))

    class Runtime(torch.nn.Module):
        """The runtime where val.run expects a model: images (1, 3, H, W) -> raw detections."""

        def __init__(self):
            super().__init__()
            self.device_marker = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # val reads the device
            self.names = checked["names"]

        def forward(self, im, augment=False):
            return torch.from_numpy(call(im.float().numpy()))

    loader = create_dataloader(checked["val"], imgsz, 1, 32, False, pad=0.5, rect=False, workers=0,
                               prefix="val: ")[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = val.run(checked, model=Runtime(), dataloader=loader, imgsz=imgsz, batch_size=1, half=False,
                          plots=False, save_dir=Path(tmp), compute_loss=None)[0]
    return float(results[2]), float(results[3])


def _run(args: Sequence[str], cwd: Path, script: bool = False) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, __file__] if script else [sys.executable, "-m", "yolov5_dattn"]
    result = subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)
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
        if not loadable:  # YOLOv5's val loop with the runtime as the model, in a process of its own
            found = map_of(_run(["--val-runtime", model, "--data", data, "--imgsz", imgsz], folder, script=True))
            rows.append((host, label, *found, " ".join(map(str, export))))
            print(f"{host} {label}: mAP50 {found[0]:.4f}, mAP50-95 {found[1]:.4f}", flush=True)
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
    if args.val_runtime is not None:
        m50, m = val_in_runtime(args.val_runtime, args.data, args.imgsz)
        print(f"{'all':>22}{0:>11}{0:>11}{0:>11.3g}{0:>11.3g}{m50:>11.3g}{m:>11.3g}")  # as YOLOv5's val prints
        return 0
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
