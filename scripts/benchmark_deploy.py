#!/usr/bin/env python
"""Latency of an exported model in onnxruntime and OpenVINO against PyTorch, in one process.

For each config (default: yolov5n_c3_dattn and the stock yolov5n it extends) the model is built with random
weights, exported to ONNX (opset 17, static --imgsz), and run on the same input by PyTorch (eager, fp32),
onnxruntime (CPU) and OpenVINO (CPU, f32 inference). The calls alternate between the three, --runs rounds
after a warm-up; the table gives each one's median latency and its ratio to PyTorch's, with the max abs
difference of the raw outputs. All three use --threads threads.

    python scripts/benchmark_deploy.py --imgsz 640 --runs 20
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", nargs="+", default=["yolov5n_c3_dattn.yaml", "yolov5n.yaml"],
                        help="model YAMLs: shipped names, YOLOv5's own (yolov5n.yaml) or paths")
    parser.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (each runs all three once)")
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch, onnxruntime and OpenVINO")
    return parser.parse_args(argv)


def build(cfg: str):
    """The model of `cfg` in eval mode, its Detect head returning one tensor (as exported)."""
    import yolov5
    from yolov5.models.yolo import Model

    from yolov5_dattn.hosts.yolov5.quiet import quiet_yolov5
    from yolov5_dattn.shipped import resolve
    path = resolve(cfg, "cfg")
    if not Path(path).is_file():
        path = str(Path(yolov5.__file__).parent / "models" / cfg)
    with quiet_yolov5():
        model = Model(path).eval()
    model.model[-1].export = True
    return model


def runners(model, onnx_file: Path, x, threads: int):
    """name -> a call returning the raw output as a numpy array."""
    import onnxruntime as ort
    import torch

    from yolov5_dattn.hosts.yolov5.deploy import import_openvino

    with torch.no_grad():
        torch.onnx.export(model, x, str(onnx_file), opset_version=17, input_names=["images"], output_names=["output0"],
                          dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    ov = import_openvino()
    compiled = ov.Core().compile_model(str(onnx_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                "INFERENCE_NUM_THREADS": threads})
    image = x.numpy()

    def pytorch():
        with torch.no_grad():
            return model(x)[0].numpy()

    return {"PyTorch": pytorch,
            "onnxruntime": lambda: session.run(None, {"images": image})[0],
            "OpenVINO": lambda: compiled([image])[0]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    import yolov5_dattn  # noqa: F401  (registers the modules)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.cfg:
            torch.manual_seed(0)
            model = build(cfg)
            x = torch.rand(1, 3, args.imgsz, args.imgsz)
            calls = runners(model, Path(tmp) / f"{Path(cfg).stem}.onnx", x, args.threads)
            reference = calls["PyTorch"]()
            diff = {name: float(np.abs(call() - reference).max()) for name, call in calls.items()}  # also warms up
            times = {name: [] for name in calls}
            for _ in range(args.runs):
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["PyTorch"])
            for name in calls:
                median = statistics.median(times[name])
                rows.append((Path(cfg).stem, name, median * 1e3, median / base, diff[name]))
    print(f"| model | runtime | median ms (1×3×{args.imgsz}×{args.imgsz}, {args.threads} threads) | × PyTorch "
          f"| max abs diff |")
    print("|---|---|---:|---:|---:|")
    for model, name, ms, ratio, diff in rows:
        print(f"| {model} | {name} | {ms:.1f} | {ratio:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
