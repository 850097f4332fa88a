#!/usr/bin/env python
"""Build fp32 and fp16 TensorRT engines from an ONNX export and compare them with onnxruntime.

The ONNX file is meant to be a Gather-sampler export (no GridSample node: `yolov5-dattn export --include onnx
--sampler gather [--dynamic]` or `yolov5-dattn yolo export format=onnx sampler=gather [dynamic=True]`). Both
engines and onnxruntime (CPU, fp32) run the same random images; the table gives, per precision, batch and size,
the max abs difference of the raw outputs and the max of |diff| / max(1, |onnxruntime|) (boxes are pixels, so
large values are compared relatively), against --tol (fp32) and --tol-fp16.

    python scripts/check_tensorrt.py best.onnx                              # a static export: its own shape
    python scripts/check_tensorrt.py best.onnx --batch 1 2 --sizes 640x640 480x640   # a --dynamic one

Needs the `tensorrt` package and a CUDA GPU (the buffers are torch CUDA tensors); without them it exits 2 with
one `error:` line before any work. Exit 1 when a row is outside its tolerance, else 0.
"""
import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

__all__ = ["main"]

Shape = Tuple[int, ...]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path, help="the ONNX file (a --sampler gather export)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2], help="batch sizes for a --dynamic export")
    parser.add_argument("--sizes", nargs="+", default=["640x640", "480x640"],
                        help="HxW input sizes for a --dynamic export (multiples of the stride, 32)")
    parser.add_argument("--tol", type=float, default=1e-3, help="fp32: max |diff| / max(1, |onnxruntime|)")
    parser.add_argument("--tol-fp16", type=float, default=5e-2, help="fp16: max |diff| / max(1, |onnxruntime|)")
    parser.add_argument("--workspace", type=float, default=4.0, help="TensorRT builder workspace, GiB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input images")
    return parser.parse_args(argv)


def refusal(args: argparse.Namespace) -> str:
    """Why the check cannot run here (one line), or '' when it can. Imports neither TensorRT nor CUDA."""
    if not args.onnx.is_file():
        return f"{args.onnx} not found: pass an ONNX file (export one with --include onnx --sampler gather)"
    for module, pip in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("torch", "torch")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install {pip}"
    if importlib.util.find_spec("tensorrt") is None:
        return ("tensorrt is not installed: on a machine with an NVIDIA GPU, pip install tensorrt "
                "(nothing was built)")
    import torch
    if not torch.cuda.is_available():
        return ("no CUDA GPU is visible to PyTorch: TensorRT builds and runs engines on an NVIDIA GPU; run this on "
                "a machine with one and a CUDA build of torch (nothing was built)")
    try:
        for size in args.sizes:
            _size(size)
    except ValueError as e:
        return str(e)
    return ""


def _size(text: str) -> Tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise ValueError(f"--sizes {text}: write sizes as HxW, e.g. 640x640 480x640")
    return int(h), int(w)


def input_shapes(onnx_path: Path, batches: Sequence[int], sizes: Sequence[str]) -> Tuple[str, List[Shape]]:
    """The input's name and the (B, C, H, W) shapes to run: its own for a static export, else every batch × size."""
    import onnx
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    (inp,) = [i for i in graph.input if i.name not in initializers]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    if -1 not in dims:
        return inp.name, [tuple(dims)]
    channels = dims[1] if dims[1] > 0 else 3
    return inp.name, [(b, channels, *_size(s)) for b in batches for s in sizes]


def build_engine(trt, onnx_path: Path, name: str, shapes: Sequence[Shape], fp16: bool, workspace_gib: float):
    """A TensorRT engine for the ONNX file (fp16 kernels allowed when `fp16`), one optimisation profile spanning
    `shapes`. Raises RuntimeError with the parser's or builder's messages when it fails."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # explicit batch is the only mode from TensorRT 10 on; before it, it has to be asked for
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    low = tuple(min(s[i] for s in shapes) for i in range(4))
    high = tuple(max(s[i] for s in shapes) for i in range(4))
    profile.set_shape(name, low, shapes[0], high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build a{' fp16' if fp16 else 'n fp32'} engine from {onnx_path}")
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def run_engine(trt, engine, name: str, image) -> List:
    """Run `engine` on `image` (a (B, C, H, W) float32 numpy array); returns its outputs as numpy arrays, in the
    engine's output order."""
    import numpy as np
    import torch
    context = engine.create_execution_context()
    context.set_input_shape(name, tuple(image.shape))
    buffers: Dict[str, torch.Tensor] = {}
    outputs = []
    for i in range(engine.num_io_tensors):
        tensor = engine.get_tensor_name(i)
        if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
            buffers[tensor] = torch.from_numpy(image).cuda().contiguous()
        else:
            dtype = torch.from_numpy(np.zeros(1, trt.nptype(engine.get_tensor_dtype(tensor)))).dtype
            buffers[tensor] = torch.empty(tuple(context.get_tensor_shape(tensor)), dtype=dtype, device="cuda")
            outputs.append(tensor)
        context.set_tensor_address(tensor, buffers[tensor].data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT's execute_async_v3 failed")
    stream.synchronize()
    return [buffers[t].float().cpu().numpy() for t in outputs]


def compare(reference, got) -> Tuple[float, float]:
    """(max |diff|, max |diff| / max(1, |reference|)) over all outputs."""
    import numpy as np
    worst_abs = worst_rel = 0.0
    for r, g in zip(reference, got):
        if r.shape != g.shape:
            return float("inf"), float("inf")
        diff = np.abs(g.astype(np.float64) - r)
        worst_abs = max(worst_abs, float(diff.max()))
        worst_rel = max(worst_rel, float((diff / np.maximum(1.0, np.abs(r))).max()))
    return worst_abs, worst_rel


def main(argv=None) -> int:
    args = parse_args(argv)
    reason = refusal(args)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tensorrt as trt

    if any(n.op_type == "GridSample" for n in onnx.load(str(args.onnx), load_external_data=False).graph.node):
        print(f"notice: {args.onnx} has GridSample nodes (exported with the grid_sample sampler); TensorRT's "
              f"GridSample is what --sampler gather avoids", file=sys.stderr)
    name, shapes = input_shapes(args.onnx, args.batch, args.sizes)
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(args.seed)
    images = [rng.random(shape, dtype=np.float32) for shape in shapes]
    reference = [session.run(None, {name: image}) for image in images]

    print(f"TensorRT {trt.__version__}, onnxruntime {ort.__version__}, {args.onnx}")
    header = f"{'precision':<9} {'batch':>5} {'size':>9} {'max abs':>11} {'max rel':>11} {'tol':>8}  ok"
    print(header)
    print("-" * len(header))
    failed = False
    for precision, tol in (("fp32", args.tol), ("fp16", args.tol_fp16)):
        engine = build_engine(trt, args.onnx, name, shapes, precision == "fp16", args.workspace)
        for shape, image, ref in zip(shapes, images, reference):
            worst_abs, worst_rel = compare(ref, run_engine(trt, engine, name, image))
            ok = worst_rel <= tol
            failed |= not ok
            print(f"{precision:<9} {shape[0]:>5} {f'{shape[2]}x{shape[3]}':>9} {worst_abs:>11.3e} "
                  f"{worst_rel:>11.3e} {tol:>8.0e}  {'yes' if ok else 'NO'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
