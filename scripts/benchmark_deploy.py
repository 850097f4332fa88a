#!/usr/bin/env python
"""Latency of an exported model in onnxruntime, OpenVINO, MNN, NCNN and LiteRT against PyTorch, in one process.

For each config (default: yolov5n_c3_dattn and the stock yolov5n it extends) the model is built with random
weights, exported to ONNX (opset 17, static --imgsz), and run on the same input by PyTorch (eager, fp32),
onnxruntime (CPU), OpenVINO (CPU, f32 inference), MNN (the ONNX with the Gather sampler through MNN's converter,
CPU, high precision), NCNN (traced by pnnx as `--include ncnn` does, fp32 options) and LiteRT (converted by
litert-torch with the Gather sampler as `--include tflite` does, NCHW in; XNNPACK, LiteRT's default). The calls alternate
between the runtimes, --runs rounds after a warm-up; the first table gives each one's median latency and its
ratio to PyTorch's, with the max abs difference of the raw outputs; the second, per runtime, the first config's
median over each other config's (DAttention model ÷ stock baseline in the same runtime). All use --threads
threads.

    python scripts/benchmark_deploy.py --imgsz 640 --runs 20
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

RUNTIMES = ("onnxruntime", "OpenVINO", "MNN", "NCNN", "LiteRT")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", nargs="+", default=["yolov5n_c3_dattn.yaml", "yolov5n.yaml"],
                        help="model YAMLs: shipped names, YOLOv5's own (yolov5n.yaml) or paths")
    parser.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (each runs all three once)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                        help="runtimes besides PyTorch (MNN, NCNN and LiteRT need the edge extra)")
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


def _mnn(model, x, folder: Path, threads: int):
    """MNN's call: the Gather-sampler ONNX of `model` converted by MNN's converter."""
    import MNN
    import numpy as np
    import torch

    from yolov5_dattn.mnn_convert import onnx_to_mnn
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    onnx_file = folder / "gather.onnx"
    with sampler_set_to("gather"), torch.no_grad():
        torch.onnx.export(model, x, str(onnx_file), opset_version=17, input_names=["images"], output_names=["output0"],
                          dynamo=False)
    runtime = MNN.nn.create_runtime_manager(({"precision": "high", "backend": "CPU", "numThread": threads},))
    net = MNN.nn.load_module_from_file(str(onnx_to_mnn(onnx_file, folder / "model.mnn")), [], [],
                                       runtime_manager=runtime, rearrange=True)
    image = np.ascontiguousarray(x.numpy())

    def call():
        out = net.onForward([MNN.expr.const(image, list(image.shape), MNN.expr.NCHW)])[0]
        return np.array(MNN.expr.convert(out, MNN.expr.NCHW).read())
    return call


def _ncnn(model, x, folder: Path, threads: int):
    """NCNN's call: `model` traced by pnnx as `--include ncnn` traces it, run with fp32 options."""
    import os

    import ncnn
    import numpy as np
    import pnnx
    import torch

    from yolov5_dattn.nn.ncnn_forms import ncnn_forms
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    cwd = os.getcwd()
    os.chdir(folder)  # pnnx writes debug files into the working directory
    try:
        with sampler_set_to("grid_sample"), ncnn_forms(), torch.no_grad():
            pnnx.export(model, str(folder / "model.pt"), inputs=x, device="cpu")
    finally:
        os.chdir(cwd)
    net = ncnn.Net()
    for option in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    net.opt.num_threads = threads
    net.load_param(str(folder / "model.ncnn.param"))
    net.load_model(str(folder / "model.ncnn.bin"))
    image = ncnn.Mat(x[0].numpy()).clone()

    def call():
        ex = net.create_extractor()
        ex.input("in0", image)
        return np.array(ex.extract("out0")[1])[None]
    return call


def _litert(model, x, folder: Path, threads: int):
    """LiteRT's call (XNNPACK): `model` converted by litert-torch with the Gather sampler, NCHW in."""
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from yolov5_dattn.hosts.yolov5.tflite_export import squares_as_products
    from yolov5_dattn.nn.sampler_switch import sampler_set_to
    path = folder / "model.tflite"
    with torch.no_grad(), sampler_set_to("gather"), squares_as_products():
        litert_torch.convert(model, (x,)).export(str(path))
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,), out = interpreter.get_input_details(), interpreter.get_output_details()[0]
    image = x.numpy()

    def call():
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return call


def runners(model, onnx_file: Path, x, threads: int, runtimes=RUNTIMES):
    """name -> a call returning the raw output as a numpy array: PyTorch and each of `runtimes`."""
    import torch

    with torch.no_grad():
        torch.onnx.export(model, x, str(onnx_file), opset_version=17, input_names=["images"], output_names=["output0"],
                          dynamo=False)
    image = x.numpy()

    def pytorch():
        with torch.no_grad():
            return model(x)[0].numpy()

    calls = {"PyTorch": pytorch}
    if "onnxruntime" in runtimes:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        calls["onnxruntime"] = lambda: session.run(None, {"images": image})[0]
    if "OpenVINO" in runtimes:
        from yolov5_dattn.hosts.yolov5.deploy import import_openvino
        compiled = import_openvino().Core().compile_model(str(onnx_file), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
        calls["OpenVINO"] = lambda: compiled([image])[0]
    for name, make in (("MNN", _mnn), ("NCNN", _ncnn), ("LiteRT", _litert)):
        if name in runtimes:
            folder = onnx_file.with_name(f"{onnx_file.stem}_{name.lower()}")
            folder.mkdir(exist_ok=True)
            calls[name] = make(model, x, folder, threads)
    return calls


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
            calls = runners(model, Path(tmp) / f"{Path(cfg).stem}.onnx", x, args.threads, args.runtimes)
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
        print(f"| {model} | {name} | {ms:.2f} | {ratio:.2f} | {diff:.1e} |")  # 2 decimals: LiteRT runs 64 px in ~1 ms
    models = list(dict.fromkeys(r[0] for r in rows))
    if len(models) > 1:
        median = {(r[0], r[1]): r[2] for r in rows}
        print(f"\n| runtime | {' | '.join(f'{models[0]} ÷ {m}' for m in models[1:])} |")
        print("|---|" + "---:|" * (len(models) - 1))
        for name in dict.fromkeys(r[1] for r in rows):
            print(f"| {name} | " + " | ".join(f"{median[models[0], name] / median[m, name]:.2f}" for m in models[1:])
                  + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
