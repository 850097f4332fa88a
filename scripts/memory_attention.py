#!/usr/bin/env python
"""Where does one DAttention layer's forward+backward memory go? A table, one fresh process per case.

For one layer (default: the l-scale P3 layer of the benchmark, 128 channels on an 80×80 map, 8 heads, batch 1,
fp32, CPU) and each case (attention kernel × pass × allocator), a new Python process builds the module and its
input, then runs the pass three times:

    first MB      growth of the process high-water mark (VmHWM) over the first call, from the resident memory
                  just before it (VmHWM reset through /proc/self/clear_refs): what "one image, fresh process"
                  costs, one-time set-up (oneDNN/MKL buffers, the kernel's per-thread scratch) included;
    steady MB     the same over the third call (reset before it): what every further call costs;
    saved MB      the tensors autograd keeps for backward (distinct storages, `saved_tensors_hooks`), exact and
                  machine-independent; `top saved` lists the largest, by shape;
    grads MB      the parameter and input gradients the call leaves behind.

Allocator: `default` is glibc as training runs it (freed blocks may stay in the process and count again);
`mmap` hands every block over 1 MiB back when freed (MALLOC_MMAP_THRESHOLD_=1 MiB, as
`scripts/benchmark_attention.py` measures memory), so a figure is memory alive at one moment.

    python scripts/memory_attention.py                        # ours and SDPA, fwd and fwd+bwd, both allocators
    python scripts/memory_attention.py --root /tmp/old-checkout   # the same cases with another checkout's module
    python scripts/memory_attention.py --channels 64 --side 80 --json mem.json
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("ours", "sdpa")
ALLOCATORS = ("default", "mmap")
PASSES = ("fwd", "fwd+bwd")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose yolov5_dattn is measured (default: this)")
    p.add_argument("--channels", type=int, default=128, help="C (l-scale P3: 128)")
    p.add_argument("--side", type=int, default=80, help="map side (P3 at 640: 80)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    p.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    p.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=ALLOCATORS)
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset() -> int:
    """Reset VmHWM to the resident size; returns that baseline in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _kib("VmRSS")


def measure(spec: dict) -> dict:
    """One case, in this (fresh) process."""
    sys.path.insert(0, spec["root"])
    import torch
    torch.set_num_threads(spec["threads"])
    from yolov5_dattn.nn.dattention import DAttention
    import yolov5_dattn.nn.dattention as dattention_module
    C, side, B = spec["channels"], spec["side"], spec["batch"]
    torch.manual_seed(0)
    module = DAttention(C, (side, side), n_heads=spec["heads"], n_groups=spec["groups"])
    x = torch.randn(B, C, side, side, requires_grad=spec["pass"] == "fwd+bwd")
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        saved.setdefault(storage.data_ptr(), (storage.nbytes(), tuple(t.shape)))
        return t

    def call(record: bool):
        module.zero_grad(set_to_none=True)
        x.grad = None
        if spec["pass"] == "fwd":
            with torch.no_grad():
                module(x)
            return
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if record else _nothing():
            y = module(x)
        y.sum().backward()

    kernel_used = []
    original = getattr(dattention_module, "select_kernel", None)
    if original is not None:
        def spy(*args, **kwargs):
            kernel_used.append(original(*args, **kwargs))
            return kernel_used[-1]
        dattention_module.select_kernel = spy
    growth = []
    for i in range(3):
        base = _reset()
        call(record=i == 2)
        growth.append((_kib("VmHWM") - base) / 1024)
    grads = sum(p.grad.numel() * 4 for p in module.parameters() if p.grad is not None) + \
        (x.grad.numel() * 4 if x.grad is not None else 0)
    top = sorted(saved.values(), reverse=True)[:6]
    return {"first_mb": growth[0], "steady_mb": growth[2], "saved_mb": sum(n for n, _ in saved.values()) / 2 ** 20,
            "grads_mb": grads / 2 ** 20, "top_saved": [[round(n / 2 ** 20, 2), list(s)] for n, s in top],
            "kernel_ran": sorted(set(kernel_used)) or ["unknown"]}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def in_fresh_process(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "YOLOV5_DATTN_CPU_KERNEL": "1" if spec["kernel"] == "ours" else "0"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if spec["allocator"] == "mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = str(2 ** 20)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:200]}


def main(argv=None) -> int:
    opt = parse_args(argv)
    if opt.worker:
        print("RESULT " + json.dumps(measure(json.loads(opt.worker))), flush=True)
        return 0
    if not (opt.root / "yolov5_dattn" / "nn" / "dattention.py").is_file():
        print(f"error: --root {opt.root}: no yolov5_dattn/nn/dattention.py there: pass a checkout of this project",
              file=sys.stderr)
        return 2
    base = {"root": str(opt.root.resolve()), "channels": opt.channels, "side": opt.side, "heads": opt.heads,
            "groups": opt.groups, "batch": opt.batch, "threads": opt.threads}
    print(f"DAttention C={opt.channels}, {opt.side}x{opt.side}, {opt.heads} heads, {opt.groups} groups, batch "
          f"{opt.batch}, fp32, {opt.threads} threads; module from {opt.root}")
    header = (f"{'kernel':<7} {'pass':<8} {'allocator':<9} {'first MB':>9} {'steady MB':>10} {'saved MB':>9} "
              f"{'grads MB':>9}  top saved (MB, shape)")
    print(header)
    print("-" * len(header))
    rows = []
    for kernel in opt.kernels:
        for pass_ in opt.passes:
            for allocator in opt.allocators:
                spec = {**base, "kernel": kernel, "pass": pass_, "allocator": allocator}
                r = in_fresh_process(spec)
                rows.append({**spec, **r})
                if "error" in r:
                    print(f"{kernel:<7} {pass_:<8} {allocator:<9} failed: {r['error']}")
                    continue
                top = ", ".join(f"{n:g} {'x'.join(map(str, s))}" for n, s in r["top_saved"][:4])
                print(f"{kernel:<7} {pass_:<8} {allocator:<9} {r['first_mb']:>9.1f} {r['steady_mb']:>10.1f} "
                      f"{r['saved_mb']:>9.1f} {r['grads_mb']:>9.1f}  {top}", flush=True)
    if opt.json:
        opt.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
