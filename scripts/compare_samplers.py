#!/usr/bin/env python
"""How far the Gather sampler is from `grid_sample`, alone and in exported models (the figures of docs/deploy.md).

1. `grid_sample_gather` against `F.grid_sample(bilinear, align_corners=True, zeros)` on random grids (positions
   up to far outside the map, maps 1 pixel wide / high included): max abs difference of the output and of the
   gradients of input and grid.
2. A random-init yolov5n_c3_dattn and yolo11n-c3k2-dattn, exported to ONNX (opset 17, --dynamic, --sampler gather)
   by our commands, run in onnxruntime against PyTorch (its default sampler, grid_sample) at batch 1 and 2 and
   --sizes: max abs difference of the raw outputs and the largest |output|; and, for scale, the yolov5n export
   with the grid_sample sampler (a GridSample node) against the same PyTorch.

    python scripts/compare_samplers.py --sizes 64x64 64x96 --imgsz 64
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["64x64", "64x96"], help="HxW inputs of the exported models")
    parser.add_argument("--imgsz", type=int, default=64, help="export size")
    parser.add_argument("--trials", type=int, default=50, help="random grids in part 1")
    return parser.parse_args(argv)


def sampler_table(trials: int) -> None:
    import torch
    import torch.nn.functional as F

    from yolov5_dattn.nn.gather_sampler import grid_sample_gather
    g = torch.Generator().manual_seed(0)
    worst = {"output": 0.0, "d input": 0.0, "d grid": 0.0}
    largest = 0.0  # the largest grid gradient: the scale of its difference
    for t in range(trials):
        n, c = 1 + t % 3, 1 + t % 16
        h, w = (1 + int(torch.randint(24, (1,), generator=g)) for _ in range(2))
        if t % 5 == 0:
            h = 1
        if t % 7 == 0:
            w = 1
        x = torch.randn(n, c, h, w, generator=g, requires_grad=True)
        grid = (torch.randn(n, 5, 7, 2, generator=g) * (1 + t % 4) * 2).requires_grad_()
        up = torch.randn(n, c, 5, 7, generator=g)
        ref = F.grid_sample(x, grid, mode="bilinear", align_corners=True, padding_mode="zeros")
        got = grid_sample_gather(x, grid)
        worst["output"] = max(worst["output"], float((got - ref).detach().abs().max()))
        for key, a, b in zip(("d input", "d grid"), torch.autograd.grad(ref, (x, grid), up),
                             torch.autograd.grad(got, (x, grid), up)):
            worst[key] = max(worst[key], float((a - b).abs().max()))
            largest = max(largest, float(a.abs().max())) if key == "d grid" else largest
    print(f"1. Gather sampler vs grid_sample, {trials} random grids (fp32): "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + f" (largest grid gradient {largest:.0f})")


def model_rows(name: str, onnx_path: Path, forward, sizes) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for b in (1, 2):
        for h, w in sizes:
            x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(b * h * w))
            ref = forward(x)
            got = session.run(None, {"images": x.numpy()})[0]
            print(f"| {name} | {b} | {h}x{w} | {float(np.abs(got - ref).max()):.1e} | {float(np.abs(ref).max()):.0f} "
                  f"| {'yes' if 'GridSample' in ops else 'no'} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import yolov5_dattn  # noqa: F401
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    sampler_table(args.trials)
    print("\n2. ONNX (opset 17, --dynamic, Gather sampler) in onnxruntime vs PyTorch (grid_sample)\n")
    print("| model | batch | size | max abs diff | max abs output | GridSample node |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from yolov5.models.experimental import attempt_load
        from yolov5.models.yolo import Model

        from yolov5_dattn.shipped import resolve
        from yolov5_dattn.hosts.yolov5.entrypoint import main as run_task
        torch.manual_seed(0)
        torch.save({"model": Model(resolve("yolov5n_c3_dattn.yaml", "cfg"), ch=3, nc=3).eval(), "epoch": -1},
                   tmp / "v5.pt")
        assert run_task("export", ["--weights", str(tmp / "v5.pt"), "--imgsz", str(args.imgsz), "--device", "cpu",
                                   "--include", "onnx", "--dynamic", "--sampler", "gather"]) == 0
        (tmp / "v5g.pt").write_bytes((tmp / "v5.pt").read_bytes())
        assert run_task("export", ["--weights", str(tmp / "v5g.pt"), "--imgsz", str(args.imgsz), "--device", "cpu",
                                   "--include", "onnx", "--dynamic", "--sampler", "grid_sample"]) == 0
        v5 = attempt_load(str(tmp / "v5.pt"), device="cpu", fuse=True).eval()
        with torch.no_grad():
            model_rows("yolov5n_c3_dattn", tmp / "v5.onnx", lambda x: v5(x)[0].numpy(), sizes)
            model_rows("yolov5n_c3_dattn", tmp / "v5g.onnx", lambda x: v5(x)[0].numpy(), sizes)

        import yolov5_dattn.hosts.ultralytics  # noqa: F401
        from ultralytics import YOLO

        from yolov5_dattn.cli.yolo import main as yolo, shipped_model
        torch.manual_seed(0)
        YOLO(shipped_model("yolo11n-c3k2-dattn.yaml")).save(str(tmp / "u.pt"))
        assert yolo(["export", f"model={tmp / 'u.pt'}", "format=onnx", f"imgsz={args.imgsz}", "opset=17",
                     "dynamic=True", "sampler=gather"]) == 0
        u = YOLO(str(tmp / "u.pt")).model.fuse().eval()
        with torch.no_grad():
            model_rows("yolo11n-c3k2-dattn", tmp / "u.onnx", lambda x: u(x)[0].numpy(), sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
