"""Measuring a model's latency and peak memory, honestly: warm-up, medians, a clean process for memory.

- Latency: the median of repeated forwards after warm-up runs, in eval mode without autograd; CUDA is
  synchronised around each run; models compared are timed in turns. Say which device, how many CPU
  threads (`device_description`) and how busy the machine was (`load_average`).
- Peak memory of a forward (eval, no autograd) and of a training step (forward + backward of a surrogate
  loss, gradients included), measured as growth over the memory held before the step:
  CUDA: `torch.cuda.max_memory_allocated`. CPU: the process's resident high-water mark (VmHWM), in a
  fresh subprocess (`python -m yolov5_dattn.analysis.profiling`) so that nothing this process allocated before
  counts; memory freed before a step is handed back to the OS (`trim_heap`) and the mark is reset
  (/proc/self/clear_refs) after a warm-up run, so library loading and one-time buffers are excluded.
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from yolov5_dattn.hosts.yolov5.quiet import quiet_yolov5
from .proc_status import proc_status_kib

MB = 2 ** 20


# ---- devices -------------------------------------------------------------------------------------
def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """E.g. 'cpu: Intel(R) Xeon(R) Processor, 2 threads' or 'cuda:0: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"{device}: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {cpu_name()}, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on `device` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- models --------------------------------------------------------------------------------------


def build_model(cfg: str, nc: Optional[int] = None, seed: int = 0) -> nn.Module:
    """A YOLOv5 model from a YAML, quietly, with seeded initialisation (segmentation head -> SegmentationModel).

    Args: cfg path; nc classes (None: the YAML's). Returns the model on CPU in training mode.
    """
    import yaml
    import yolov5_dattn  # noqa: F401  (registers our modules)
    from yolov5.models.yolo import DetectionModel, SegmentationModel

    text = Path(cfg).read_text(encoding="utf-8")
    cls = SegmentationModel if "Segment" in str(yaml.safe_load(text).get("head", "")) else DetectionModel
    torch.manual_seed(seed)
    with quiet_yolov5():
        return cls(cfg, ch=3, nc=nc)


# ---- latency -------------------------------------------------------------------------------------
def median_latency_ms(fns: Sequence[Callable[[], object]], device: torch.device, warmup: int = 2,
                      runs: int = 10) -> List[Dict]:
    """Time several callables (one per model) in turns — A, B, A, B... — so that they share the machine's
    load fairly, after `warmup` untimed calls of each.

    Returns one {'median', 'min', 'max'} (ms) and 'runs' per callable.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            t.append((time.perf_counter() - start) * 1e3)
    return [{"median": statistics.median(t), "min": min(t), "max": max(t), "runs": runs} for t in times]


def load_average() -> Optional[float]:
    """The 1-minute load average (runnable processes; above the core count, timings are inflated), or None."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def module_times_ms(model: nn.Module, x: torch.Tensor, names: Sequence[str], runs: int = 3) -> Dict[str, float]:
    """Median wall time of each named submodule over `runs` eval forwards of `model(x)`, via forward hooks.

    Args: names as in `model.named_modules()`. Returns {name: ms}; the forward's own median under '' .
    """
    device = x.device
    modules = dict(model.named_modules())
    started: Dict[str, float] = {}
    times: Dict[str, list] = {n: [] for n in names}

    def before(name):
        def hook(module, args):
            synchronize(device)
            started[name] = time.perf_counter()
        return hook

    def after(name):
        def hook(module, args, output):
            synchronize(device)
            times[name][-1] += (time.perf_counter() - started[name]) * 1e3
        return hook

    totals, handles = [], []
    model.eval()
    try:
        with torch.no_grad():
            model(x)  # warm-up
            for n in names:
                handles += [modules[n].register_forward_pre_hook(before(n)), modules[n].register_forward_hook(after(n))]
            for _ in range(runs):
                for n in names:
                    times[n].append(0.0)  # a module may run more than once per forward
                synchronize(device)
                start = time.perf_counter()
                model(x)
                synchronize(device)
                totals.append((time.perf_counter() - start) * 1e3)
    finally:
        for h in handles:
            h.remove()
    out = {n: statistics.median(t) for n, t in times.items()}
    out[""] = statistics.median(totals)
    return out


# ---- memory --------------------------------------------------------------------------------------
@contextlib.contextmanager
def peak_growth_mb(device: torch.device, result: Dict[str, float], key: str):
    """Record in `result[key]` the peak memory (MB) reached within the block above what was held before it.

    CPU: VmHWM after resetting it to the current VmRSS (Linux). CUDA: max_memory_allocated.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        torch.cuda.synchronize(device)
        result[key] = (torch.cuda.max_memory_allocated(device) - base) / MB
    else:
        trim_heap()
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size to the current
        base = proc_status_kib("VmRSS")
        yield
        result[key] = (proc_status_kib("VmHWM") - base) * 1024 / MB


def trim_heap() -> bool:
    """Hand the pages of freed heap blocks back to the OS (glibc `malloc_trim(0)`).

    Freed tensors otherwise stay resident, and a later step reusing them would not raise the resident
    high-water mark: part of its peak would be hidden. Reused after the trim, they are faulted in again
    and counted. Returns False where malloc_trim is not available (non-glibc).
    """
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
        return True
    except (OSError, AttributeError, TypeError):
        return False


def measure_peaks(model: nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """Peak memory (MB) of one eval forward and of one training step of `model(x)`, each after a warm-up.

    Returns {'forward': MB, 'train': MB}. Gradients are left cleared.
    """
    from .flops import surrogate_loss

    device = x.device
    peaks: Dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        model(x)
        with peak_growth_mb(device, peaks, "forward"):
            model(x)
    model.train()
    surrogate_loss(model(x)).backward()
    model.zero_grad(set_to_none=True)
    with peak_growth_mb(device, peaks, "train"):
        surrogate_loss(model(x)).backward()
    model.zero_grad(set_to_none=True)
    return peaks


def memory_supported(device: torch.device) -> bool:
    """True where peak memory can be measured: CUDA, or Linux with a resettable /proc peak."""
    return device.type == "cuda" or os.access("/proc/self/clear_refs", os.W_OK)


def start_memory_worker(cfgs: Sequence[str], ncs: Sequence[Optional[int]], input_shape: Sequence[int],
                        module: str = "yolov5_dattn.analysis.profiling"):
    """Measure the CPU peak memory of the model of each cfg, each in its own fresh process, one after another
    in a background thread (a process's allocator history changes its peaks, so models never share one).

    Each model is built there from its YAML (same seeded initialisation as `build_model`) and measured by
    `measure_peaks` on a zero input of `input_shape`, with this process's CPU thread count. The process is
    `python -m <module>`, whose main is `memory_worker` with that host's model builder.
    Returns a handle for `collect_memory_worker`.
    """
    results: List[Optional[Dict[str, float]]] = [None] * len(cfgs)
    errors: List[str] = []

    def run_all():
        for i, (cfg, nc) in enumerate(zip(cfgs, ncs)):
            command = [sys.executable, "-m", module, "--shape", *map(str, input_shape),
                       "--threads", str(torch.get_num_threads()), "--cfg", str(cfg),
                       "--nc", "-1" if nc is None else str(nc)]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or len(lines) != 1:
                errors.append(f"{cfg}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
                return
            results[i] = json.loads(lines[0])

    thread = threading.Thread(target=run_all, daemon=True)
    thread.start()
    return thread, results, errors


def collect_memory_worker(worker, count: int) -> List[Dict[str, float]]:
    """Wait for `start_memory_worker`'s measurements. Returns one {'forward': MB, 'train': MB} per cfg."""
    thread, results, errors = worker
    thread.join()
    if errors or len(results) != count:
        raise RuntimeError(f"the memory measurement process failed: {errors[0] if errors else 'no output'}")
    return results


def memory_worker(build: Callable[[str, Optional[int]], nn.Module], host: str,
                  argv: Optional[Sequence[str]] = None) -> None:
    """The main of a `start_memory_worker` process: build each `--cfg` with `build(cfg, nc)` and print its
    `measure_peaks` as one JSON line (for comparable figures, one model per process)."""
    parser = argparse.ArgumentParser(description=f"Print the peak memory (MB) of a forward and of a training "
                                                 f"step of {host} models on CPU, one JSON line per model (for "
                                                 f"comparable figures, give one model per process).")
    parser.add_argument("--cfg", nargs="+", required=True, help="model YAMLs, measured in turn")
    parser.add_argument("--nc", type=int, nargs="+", default=None,
                        help="number of classes per cfg; -1 keeps the YAML's (default: all the YAMLs')")
    parser.add_argument("--shape", type=int, nargs=4, required=True, help="input shape B C H W")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    opt = parser.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    ncs = opt.nc or [-1] * len(opt.cfg)
    for cfg, nc in zip(opt.cfg, ncs):
        model = build(cfg, None if nc < 0 else nc)
        print(json.dumps(measure_peaks(model, torch.zeros(*opt.shape))), flush=True)
        del model


if __name__ == "__main__":
    memory_worker(build_model, "YOLOv5")
