#!/usr/bin/env python
"""How fast and how lean is DAttention? The fused module against the einsum reference, same weights.

For each case (level P5/P4/P3 × batch × forward / forward+backward):

    median latency     of --runs timed calls per implementation after one warm-up call each, both modules in
                       one fresh process, calls alternating (reference, fast, fast, reference, ...), with the
                       default allocator, as in training; with --repeats N, N such processes and the fastest
                       one's median per implementation;
    speed-up           the median, over all those pairs of neighbouring calls, of reference time / fast time:
                       this VM's speed drifts by ±30% over minutes, which timing each implementation in a
                       process of its own (as this script did before) turned into ratios from 1.1× to 1.7× for
                       the same P5 code; a call's neighbour shares its moment, and which module ran before a
                       call measured no difference to its time;
    peak memory        in another fresh process per implementation: growth of the process high-water mark
                       over two calls after a warm-up call. VmHWM is reset through /proc/self/clear_refs after
                       the warm-up (so one-time library set-up, ~140 MB of MKL/oneDNN buffers, is not counted)
                       and glibc is told to hand every block over 1 MiB back to the system when freed
                       (MALLOC_MMAP_THRESHOLD_), so that memory the warm-up used and freed is not silently
                       reused; on CUDA, torch.cuda.max_memory_allocated. Latency is not taken from that
                       process: there every large tensor costs a fresh mmap and its page faults, ~0.12 s per
                       P3 image forward+backward of the fused module, which training with the default
                       allocator does not pay (its JSON keeps that latency as `memory_run_median_s`);
    % of peak          FLOPs (yolov5_dattn.analysis.flops.flop_counter, backward included) / median latency, over the
                       machine's fp32 (or --dtype) matmul peak measured in the same process just before and
                       after the timed calls (the better of the two): on a shared machine the peak itself moves
                       by ±20% from minute to minute, so a peak measured once would skew every fraction.

Reference cases whose score matrices would not fit in --max-gb are skipped and say so.

With --configs, the layers are those of shipped model configs instead of the three levels: every DAttention of each
config at --imgsz, with its own channels, map size and options (8 heads on c2 * e channels: 4 to 80 channels per
head), at batch 1 and 8, forward and forward+backward, timed three ways in one process, calls rotating: the
reference, ours (`fast`: DAttention as it runs, our CPU kernel where it applies) and `sdpa` (the same module with
PyTorch's scaled_dot_product_attention forced). '% pk' there counts only the attention's QKᵀ and AV FLOPs
(backward twice the forward's), against the matmul peak measured in the same process: how close the attention
kernel comes to the machine while it runs inside the layer. A layer that several configs share is timed once.
No memory process in this mode.

    python scripts/benchmark_attention.py                          # the full table, fp32, 2 threads
    python scripts/benchmark_attention.py --levels P3 --batch 1 --json bench.json
    python scripts/benchmark_attention.py --levels P3 --batch 1 --passes fwd+bwd --repeats 3   # steadier ratio
    python scripts/benchmark_attention.py --device cuda --dtype fp16 bf16
    python scripts/benchmark_attention.py --train-step configs/yolov5s_c3_dattn_p3p4p5.yaml --imgsz 640 --batch 16
    python scripts/benchmark_attention.py --configs                       # every shipped detection config's layers
    python scripts/benchmark_attention.py --configs yolov5s_c3_dattn_p3p4p5.yaml --batch 1 --json layers.json
    python scripts/benchmark_attention.py --query-ratios 1 0.5 0.25 0.1     # sparse queries at P3/P4, s and l

With --query-ratios, the layers are DAttention at --levels (default P3 P4) of the --scales (s: the channels of
yolov5s_c3_dattn_p3p4p5's layers, 64 at P3 and 128 at P4; l: twice those), one module per ratio (`query_ratio`, the
same weights, each scorer its own), timed in one process per case with calls rotating, and each ratio's peak
memory in a fresh process; 'x dense' is the median over neighbouring calls of its time / the time at ratio 1.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"P5": (512, 20), "P4": (256, 40), "P3": (128, 80)}  # channels, map side at --imgsz 640
DTYPES = ("fp32", "fp16", "bf16")
IMPLS = ("reference", "fast", "sdpa")  # sdpa: the fast module with PyTorch's kernel forced (--configs)
SCALE_WIDTH = {"s": 0.5, "l": 1.0}  # --query-ratios: channels of the level at that scale (LEVELS are l's)
RATIO_IMPL = "rho="  # --query-ratios: the module with query_ratio r is implementation 'rho=<r>'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", nargs="+", default=None, choices=list(LEVELS),
                        help="pyramid levels to measure: P5 (C=512, 20×20), P4 (C=256, 40×40), P3 (C=128, 80×80)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes to measure (default 1 4 16; with --train-step one size, default 16)")
    parser.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"],
                        help="forward only (under no_grad) and/or forward+backward")
    parser.add_argument("--impl", nargs="+", default=None, choices=IMPLS,
                        help="implementations to measure (default reference fast; with --configs reference fast "
                             "sdpa); ratios need fast and the other")
    parser.add_argument("--dtype", nargs="+", default=None, choices=DTYPES,
                        help="precisions to measure (default: fp32 on CPU; fp32 fp16 bf16 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in every measuring process")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed calls per case (fewer when a case would take longer than --case-seconds)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh timing processes per case (each times both implementations, alternating); "
                             "latency is the fastest process's median, the speed-up the median of all paired calls")
    parser.add_argument("--case-seconds", type=float, default=60.0,
                        help="stop timing a case after this many seconds (at least 2 timed calls)")
    parser.add_argument("--max-gb", type=float, default=10.0,
                        help="skip reference cases whose estimated peak memory exceeds this many GiB")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--train-step", type=Path, default=None, metavar="CFG",
                        help="instead of the table: peak memory and time of one training step of this model YAML "
                             "(forward, YOLOv5 loss, backward, SGD step) with random images and boxes")
    parser.add_argument("--configs", nargs="*", default=None, metavar="CFG",
                        help="instead of --levels: every DAttention layer of these model YAMLs (paths or shipped "
                             "names; none given: every shipped detection config) at --imgsz")
    parser.add_argument("--imgsz", type=int, default=640, help="image size for --configs and --train-step")
    parser.add_argument("--query-ratios", type=float, nargs="+", default=None, metavar="RHO",
                        help="instead of the table: sparse queries, one DAttention per query_ratio (include 1 for "
                             "the dense layer the others are compared with), at --levels (default P3 P4) of --scales")
    parser.add_argument("--scales", nargs="+", default=["s", "l"], choices=list(SCALE_WIDTH),
                        help="model scales for --query-ratios (s: half the channels of l)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one measurement, JSON spec
    opt = parser.parse_args(argv)
    if opt.levels is None:
        opt.levels = ["P3", "P4"] if opt.query_ratios is not None else list(LEVELS)
    if opt.impl is None:
        opt.impl = ["reference", "fast", "sdpa"] if opt.configs is not None else ["reference", "fast"]
    return opt


# ---- measuring (runs inside a fresh worker process) -------------------------------------------------
def proc_status_kib(field: str) -> int:
    """/proc/self/status `field` in KiB (yolov5_dattn.analysis.proc_status, importable without YOLOv5)."""
    _import_attention_modules()  # puts a checkout that is not installed on sys.path
    from yolov5_dattn.analysis.proc_status import proc_status_kib as read
    return read(field)


def _reset_high_water_mark() -> int:
    """Reset VmHWM to the current RSS where the kernel allows it; returns the baseline in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return proc_status_kib("VmRSS")
    except OSError:  # not writable here: growth is then measured from the existing high-water mark
        return proc_status_kib("VmHWM")


def _import_attention_modules():
    """DAttention and the reference from the math layer, which needs only torch and einops (no YOLOv5 import)."""
    try:
        import yolov5_dattn.nn  # noqa: F401
    except ImportError:  # a checkout that is not installed
        sys.path.insert(0, str(ROOT))
    from yolov5_dattn.nn.dattention import DAttention
    from yolov5_dattn.nn.reference import ReferenceDAttention
    return DAttention, ReferenceDAttention


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(spec: dict) -> dict:
    """Best observed matmul throughput (GFLOP/s) of square 2048 (4096 on CUDA) matrices in this dtype."""
    import torch
    torch.set_num_threads(spec["threads"])
    device, dtype = torch.device(spec["device"]), getattr(torch, _torch_dtype_name(spec["dtype"]))
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(12):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9}


def measure_case(spec: dict) -> dict:
    """Peak memory of one implementation (spec["measure"] == "memory", spec["impl"]), or latency and FLOPs of
    one or both (spec["measure"] == "time", spec["impls"]), on one case (see the module docstring)."""
    import torch

    torch.set_num_threads(spec["threads"])
    DAttention, ReferenceDAttention = _import_attention_modules()
    from yolov5_dattn.analysis.flops import flop_counter  # torch's counter with our SDPA formulas (not in every release)
    from yolov5_dattn.nn import attention_kernel, attention_kernel_set_to
    device, dtype = torch.device(spec["device"]), getattr(torch, _torch_dtype_name(spec["dtype"]))
    C, B = spec["channels"], spec["batch"]
    h, w = spec.get("hw") or (spec["side"], spec["side"])
    kwargs = spec.get("kwargs", {})  # DAttention's options besides channel and q_size (--configs)
    impls = spec["impls"] if spec["measure"] == "time" else [spec["impl"]]
    torch.manual_seed(0)
    fast = DAttention(C, (h, w), **kwargs)
    modules = {}
    for impl in impls:
        if impl in ("fast", "sdpa"):  # one module: the same weights, only the kernel differs
            modules[impl] = fast
        elif impl.startswith(RATIO_IMPL):  # --query-ratios: the same weights, a scorer of its own
            modules[impl] = DAttention(C, (h, w), **kwargs, query_ratio=float(impl[len(RATIO_IMPL):]))
            modules[impl].load_state_dict(fast.state_dict(), strict=False)
        else:
            modules[impl] = ReferenceDAttention(C, (h, w), **kwargs)
            modules[impl].load_state_dict(fast.state_dict())  # same weights
        modules[impl].to(device, dtype)
    del fast
    backward = spec["pass"] == "fwd+bwd"
    x = torch.randn(B, C, h, w, device=device, dtype=dtype, requires_grad=backward)

    def call(impl) -> float:
        module = modules[impl]
        started = time.perf_counter()
        # "sdpa" is the fast module with PyTorch's kernel: the switch keeps ours out for this call
        with attention_kernel_set_to("sdpa" if impl == "sdpa" else attention_kernel()):
            if backward:
                module.zero_grad(set_to_none=True)
                x.grad = None
                module(x).sum().backward()
            else:
                with torch.no_grad():
                    module(x)
        _sync(device)
        return time.perf_counter() - started

    def timed(runs: int) -> dict:
        """Alternating calls (reference, fast, fast, reference, ...): each pair shares a moment of the machine."""
        times, started = {impl: [] for impl in impls}, time.perf_counter()
        while len(times[impls[0]]) < runs and (len(times[impls[0]]) < 2
                                               or time.perf_counter() - started < spec["case_seconds"]):
            for impl in (impls if len(times[impls[0]]) % 2 == 0 else impls[::-1]):
                times[impl].append(call(impl))
        return times

    if spec["measure"] == "memory":
        call(impls[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
        else:
            baseline = _reset_high_water_mark()
        times = timed(2)[impls[0]]
        if device.type == "cuda":
            peak_mb = (torch.cuda.max_memory_allocated(device) - baseline) / 2 ** 20
        else:
            peak_mb = (proc_status_kib("VmHWM") - baseline) / 1024
        return {"peak_mb": peak_mb, "memory_run_median_s": statistics.median(times)}

    peak_before = measure_matmul_peak(spec)["gflops"]
    counted = {}
    for impl in impls:
        with flop_counter() as counter:  # the warm-up call, counted
            call(impl)
        counted[impl] = counter
    times = timed(spec["runs"])
    peak = max(peak_before, measure_matmul_peak(spec)["gflops"])
    result = {}
    for impl in impls:
        counts = {str(op): n for op, n in counted[impl].get_flop_counts()["Global"].items()}
        kernel = ("ours (cpu_attention)" if "yolov5_dattn.attention_cpu" in counts
                  else "sdpa" if any("scaled_dot_product" in op for op in counts) else "explicit")
        result[impl] = {"median_s": statistics.median(times[impl]), "runs": len(times[impl]),
                        "gflop": counted[impl].get_total_flops() / 1e9, "kernel": kernel,
                        "matmul_peak_gflops": peak}
        if kernel != "explicit":  # the fused kernel's own FLOPs: QKᵀ and AV, backward twice the forward's
            result[impl]["attention_gflop"] = sum(n for op, n in counts.items()
                                                  if "attention_cpu" in op or "scaled_dot_product" in op) / 1e9
    dense = f"{RATIO_IMPL}1.0"
    if dense in impls:  # --query-ratios: per pair of neighbouring calls, this ratio's time / the dense layer's
        result["paired_vs_dense"] = {impl: [t / d for t, d in zip(times[impl], times[dense])] for impl in impls}
    if "fast" in impls:  # per pair of neighbouring calls: other time / ours
        for other, key in (("reference", "paired_speedups"), ("sdpa", "paired_vs_sdpa")):
            if other in impls:
                result[key] = [o / f for o, f in zip(times[other], times["fast"])]
    return result


def _torch_dtype_name(name: str) -> str:
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[name]


def run_worker(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = measure_matmul_peak(spec) if spec["what"] == "peak" else measure_case(spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---- orchestration -----------------------------------------------------------------------------------
def in_fresh_process(spec: dict) -> dict:
    """Run one measurement in a new interpreter (so its high-water mark is its own); {'error': ...} if it died.
    A memory measurement runs with glibc handing every freed block over 1 MiB back (see the module docstring)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    if spec.get("measure") == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(2 ** 20)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {"error": last[:200]}


def reference_estimate_gb(channels: int, side: int, batch: int, backward: bool, bytes_per: int) -> float:
    """The reference's peak is its (B, 8 heads, HW, HW) score matrices: ~2 alive forward, ~4 with backward
    (measured here: 5.1 GB for one P3 image fwd+bwd, whose one matrix is 1.3 GB)."""
    one = batch * 8 * (side * side) ** 2 * bytes_per / 2 ** 30
    return one * (4 if backward else 2)


def run_table(opt) -> dict:
    dtypes = opt.dtype or (["fp32", "fp16", "bf16"] if opt.device.startswith("cuda") else ["fp32"])
    base = {"device": opt.device, "threads": opt.threads}
    peaks = {}
    for dt in dtypes:
        peaks[dt] = in_fresh_process({**base, "what": "peak", "dtype": dt}).get("gflops")
    rows = []
    for dt in dtypes:
        for level in opt.levels:
            channels, side = LEVELS[level]
            for batch in opt.batch:
                for pass_ in opt.passes:
                    row = {"level": level, "channels": channels, "hw": [side, side], "batch": batch,
                           "pass": pass_, "dtype": dt}
                    spec = {**base, "what": "case", "dtype": dt, "channels": channels, "side": side,
                            "batch": batch, "pass": pass_, "runs": opt.runs, "case_seconds": opt.case_seconds}
                    impls = []
                    for impl in opt.impl:
                        estimate = reference_estimate_gb(channels, side, batch, pass_ == "fwd+bwd",
                                                         2 if dt != "fp32" else 4)
                        if impl == "reference" and estimate > opt.max_gb:
                            row[impl] = {"skipped": f"needs ~{estimate:.0f} GiB > --max-gb {opt.max_gb:g}"}
                        else:
                            impls.append(impl)
                    # both in one process, calls alternating: a slow minute of a shared machine hits both
                    timings = [in_fresh_process({**spec, "impls": impls, "measure": "time"})
                               for _ in range(opt.repeats)] if impls else []
                    if any("error" in t for t in timings) and len(impls) == 2:  # e.g. the reference ran out of memory
                        alone = {impl: in_fresh_process({**spec, "impls": [impl], "measure": "time"}) for impl in impls}
                        timings = [{impl: result.get(impl, result) for impl, result in alone.items()}]
                    for impl in impls:
                        tries = [t.get(impl, t) for t in timings]
                        row[impl] = best_of(tries, in_fresh_process({**spec, "impl": impl, "measure": "memory"}))
                    pairs = [r for t in timings for r in t.get("paired_speedups", [])]
                    if pairs:
                        row["paired_speedups"] = pairs
                    rows.append(row)
                    add_ratios(row, peaks[dt])
                    print(format_row(row), file=sys.stderr, flush=True)  # progress
    # a second look at the peak: other processes on a shared machine move it
    for dt in dtypes:
        again = in_fresh_process({**base, "what": "peak", "dtype": dt}).get("gflops")
        seen = [peaks[dt], again] + [row[i].get("matmul_peak_gflops") for row in rows if row["dtype"] == dt
                                     for i in ("reference", "fast") if i in row]
        seen = [p for p in seen if p]
        peaks[dt] = max(seen) if seen else None
    for row in rows:
        add_ratios(row, peaks[row["dtype"]])
    return {"device": opt.device, "threads": opt.threads, "matmul_peak_gflops": peaks, "rows": rows}


def best_of(tries: list, memory: dict) -> dict:
    """One implementation's result: the fastest of its --repeats timing processes (with its FLOPs, kernel and
    local peak) and the memory process's growth; an error if every timing process (or the memory one) failed."""
    ok = [t for t in tries if "median_s" in t]
    if not ok:
        return tries[-1]
    if "peak_mb" not in memory:
        return memory
    best = {**min(ok, key=lambda t: t["median_s"]), **memory}
    best["repeats"] = len(ok)
    return best


def add_ratios(row: dict, peak) -> None:
    """Speed-up and memory ratio of fast over reference, and each one's fraction of the matmul peak."""
    ref, fast, sdpa = row.get("reference", {}), row.get("fast", {}), row.get("sdpa", {})
    attention = fast.get("attention_gflop") or sdpa.get("attention_gflop")  # the same computation in all three
    for r in (ref, fast, sdpa):
        local = r.get("matmul_peak_gflops") or peak  # the peak measured around this case, else the run's
        if "median_s" in r and local:
            r["fraction_of_peak"] = r["gflop"] / r["median_s"] / local
            if attention:
                r["attention_fraction_of_peak"] = attention / r["median_s"] / local
    if "median_s" in ref and "median_s" in fast:
        row["speedup"] = (statistics.median(row["paired_speedups"]) if row.get("paired_speedups")
                          else ref["median_s"] / fast["median_s"])
        if "peak_mb" in ref and "peak_mb" in fast:
            row["memory_ratio"] = ref["peak_mb"] / max(fast["peak_mb"], 1e-3)
    if "median_s" in sdpa and "median_s" in fast:
        row["speedup_vs_sdpa"] = (statistics.median(row["paired_vs_sdpa"]) if row.get("paired_vs_sdpa")
                                  else sdpa["median_s"] / fast["median_s"])


HEADER = (f"{'level':5} {'C':>4} {'HxW':>6} {'B':>3} {'pass':8} {'dtype':5} | {'ref ms':>8} {'fast ms':>8} "
          f"{'speedup':>7} | {'ref MB':>8} {'fast MB':>8} {'less mem':>8} | {'ref %pk':>7} {'fast %pk':>8}")


def _cell(result: dict, key: str, fmt: str) -> str:
    if "skipped" in result:
        return "skip"
    if "error" in result:
        return "error"
    return format(result[key], fmt) if key in result else "-"


def format_row(row: dict) -> str:
    ref, fast = row.get("reference", {}), row.get("fast", {})
    ms = lambda r: _cell({**r, "ms": r["median_s"] * 1e3} if "median_s" in r else r, "ms", ".0f")
    pct = lambda r: _cell({**r, "p": r["fraction_of_peak"] * 100} if "fraction_of_peak" in r else r, "p", ".0f")
    ratio = lambda key, fmt: format(row[key], fmt) if key in row else "-"
    h, w = row["hw"]
    return (f"{row['level']:5} {row['channels']:>4} {f'{h}x{w}':>6} {row['batch']:>3} {row['pass']:8} "
            f"{row['dtype']:5} | {ms(ref):>8} {ms(fast):>8} {ratio('speedup', '.1f') + 'x':>7} | "
            f"{_cell(ref, 'peak_mb', '.0f'):>8} {_cell(fast, 'peak_mb', '.0f'):>8} "
            f"{ratio('memory_ratio', '.0f') + 'x':>8} | {pct(ref):>7} {pct(fast):>8}")


def print_table(result: dict) -> None:
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["matmul_peak_gflops"].items() if v)
    print(f"DAttention, reference (einsum) vs fast (fused); device {result['device']}, "
          f"{result['threads']} threads; matmul peak {peaks} (best seen; each '% pk' is against the peak "
          f"measured around its own case)")
    print(HEADER)
    print("-" * len(HEADER))
    for row in result["rows"]:
        print(format_row(row))
    kernels = {}
    for r in result["rows"]:
        if "kernel" in r.get("fast", {}):
            kernels.setdefault(r["fast"]["kernel"], []).append(r["level"])
    for kernel, levels in kernels.items():
        print(f"  fast attention kernel at {'/'.join(sorted(set(levels)))}: {kernel}")
    notes = {f"{r['level']} B={r['batch']} {r['pass']}: {r[i]['skipped'] if 'skipped' in r[i] else r[i]['error']}"
             for r in result["rows"] for i in ("reference", "fast") if i in r and ("skipped" in r[i] or "error" in r[i])}
    for note in sorted(notes):
        print("  " + note)


# ---- the layers of shipped configs (--configs) -----------------------------------------------------------
def detection_configs() -> list:
    """The shipped detection model YAMLs (the top level of the configs folder), as paths."""
    from yolov5_dattn.shipped import CONFIGS, list_configs
    return [str(CONFIGS / name) for name in list_configs("cfg") if "/" not in name]


def dattention_kwargs(module) -> dict:
    """The constructor options of a built DAttention, besides channel and q_size (JSON-able)."""
    return {"n_heads": module.n_heads, "n_groups": module.n_groups, "attn_drop": module.attn_drop.p,
            "proj_drop": module.proj_drop.p, "stride": module.stride,
            "offset_range_factor": module.offset_range_factor, "use_pe": module.use_pe, "dwc_pe": module.dwc_pe,
            "no_off": module.no_off, "fixed_pe": module.fixed_pe, "ksize": module.ksize, "log_cpb": module.log_cpb,
            "kv_size": [module.kv_h, module.kv_w]}


def dattention_layers(cfg: str, imgsz: int) -> list:
    """Every DAttention of the model `cfg` at a square `imgsz` input, in forward order: {'name', 'channels',
    'head_dim', 'hw' (the map it runs on), 'kwargs'}. The forward runs on a meta copy: shapes only."""
    import torch
    from yolov5_dattn.analysis.flops import meta_copy
    from yolov5_dattn.analysis.profiling import build_model
    from yolov5_dattn.nn.dattention import DAttention

    model = meta_copy(build_model(cfg)).eval()
    layers, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, DAttention):
            def record(module, args, name=name):
                layers.append({"name": name, "channels": module.nc, "head_dim": module.n_head_channels,
                               "hw": list(args[0].shape[-2:]), "kwargs": dattention_kwargs(module)})
            hooks.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz, device="meta"))
    for hook in hooks:
        hook.remove()
    return layers


def run_configs(opt) -> dict:
    """Time every DAttention layer of the --configs (see the module docstring); a layer shared by configs once."""
    cfgs = [str(resolve_cfg(c)) for c in opt.configs] or detection_configs()
    base = {"device": opt.device, "threads": opt.threads, "dtype": "fp32"}
    peak = in_fresh_process({**base, "what": "peak"}).get("gflops")
    measured, rows = {}, []
    for cfg in cfgs:
        for layer in dattention_layers(cfg, opt.imgsz):
            for batch in opt.batch:
                for pass_ in opt.passes:
                    key = json.dumps([layer["channels"], layer["hw"], layer["kwargs"], batch, pass_])
                    row = {"config": Path(cfg).name, "layer": layer["name"], "channels": layer["channels"],
                           "head_dim": layer["head_dim"], "hw": layer["hw"], "batch": batch, "pass": pass_,
                           "dtype": "fp32"}
                    if key not in measured:
                        measured[key] = measure_layer(opt, base, layer, batch, pass_)
                    row.update(measured[key])
                    rows.append(row)
                    add_ratios(row, peak)
                    print(format_layer_row(row), file=sys.stderr, flush=True)  # progress
    return {"device": opt.device, "threads": opt.threads, "imgsz": opt.imgsz, "configs": [Path(c).name for c in cfgs],
            "matmul_peak_gflops": {"fp32": peak}, "rows": rows}


def resolve_cfg(name: str) -> Path:
    """A --configs value as a path: an existing file, else the shipped YAML of that name."""
    from yolov5_dattn.shipped import resolve
    return Path(resolve(name, "cfg"))


def measure_layer(opt, base: dict, layer: dict, batch: int, pass_: str) -> dict:
    """The timings of one layer: the implementations rotating in each of --repeats processes (the reference
    skipped where its score matrices would not fit in --max-gb)."""
    h, w = layer["hw"]
    spec = {**base, "what": "case", "channels": layer["channels"], "hw": [h, w], "kwargs": layer["kwargs"],
            "batch": batch, "pass": pass_, "runs": opt.runs, "case_seconds": opt.case_seconds, "measure": "time"}
    result, impls = {}, []
    kv_h, kv_w = layer["kwargs"]["kv_size"]
    estimate = reference_estimate_gb(layer["channels"], 1, batch, pass_ == "fwd+bwd", 4) * (h * w * kv_h * kv_w)
    for impl in opt.impl:
        if impl == "reference" and estimate > opt.max_gb:
            result[impl] = {"skipped": f"needs ~{estimate:.0f} GiB > --max-gb {opt.max_gb:g}"}
        else:
            impls.append(impl)
    timings = [in_fresh_process({**spec, "impls": impls}) for _ in range(opt.repeats)]
    if any("error" in t for t in timings) and len(impls) > 1:  # e.g. the reference ran out of memory
        alone = {impl: in_fresh_process({**spec, "impls": [impl]}) for impl in impls}
        timings = [{impl: r.get(impl, r) for impl, r in alone.items()}]
    for impl in impls:
        tries = [t.get(impl, t) for t in timings]
        ok = [t for t in tries if "median_s" in t]
        result[impl] = {**min(ok, key=lambda t: t["median_s"]), "repeats": len(ok)} if ok else tries[-1]
    for key in ("paired_speedups", "paired_vs_sdpa"):
        pairs = [r for t in timings for r in t.get(key, [])]
        if pairs:
            result[key] = pairs
    return result


LAYER_HEADER = (f"{'config':30} {'layer':>13} {'C':>4} {'d':>3} {'HxW':>6} {'B':>2} {'pass':7} | {'ref ms':>8} "
                f"{'ours ms':>8} {'sdpa ms':>8} | {'ref/ours':>8} {'sdpa/ours':>9} | {'ours %pk':>8} {'sdpa %pk':>8}")


def format_layer_row(row: dict) -> str:
    """One --configs row: latencies, paired ratios, and the attention matmuls' fraction of the peak."""
    ms = lambda r: _cell({**r, "ms": r["median_s"] * 1e3} if "median_s" in r else r, "ms", ".1f")
    pct = lambda r: format(r["attention_fraction_of_peak"] * 100, ".0f") if "attention_fraction_of_peak" in r else "-"
    ratio = lambda key: format(row[key], ".2f") + "x" if key in row else "-"
    ref, fast, sdpa = (row.get(i, {}) for i in IMPLS)
    h, w = row["hw"]
    return (f"{row['config'].removesuffix('.yaml'):30} {row['layer']:>13} {row['channels']:>4} {row['head_dim']:>3} "
            f"{f'{h}x{w}':>6} {row['batch']:>2} {row['pass']:7} | {ms(ref):>8} {ms(fast):>8} {ms(sdpa):>8} | "
            f"{ratio('speedup'):>8} {ratio('speedup_vs_sdpa'):>9} | {pct(fast):>8} {pct(sdpa):>8}")


def print_layer_table(result: dict) -> None:
    print(f"DAttention layers of {len(result['configs'])} configs at --imgsz {result['imgsz']}: reference (einsum) "
          f"vs ours vs sdpa; device {result['device']}, {result['threads']} threads, fp32; matmul peak "
          f"{result['matmul_peak_gflops']['fp32']:.0f} GFLOP/s (each '% pk' against the peak measured around its "
          f"own case, on the QKᵀ+AV FLOPs only); ratios: medians of paired neighbouring calls")
    print(LAYER_HEADER)
    print("-" * len(LAYER_HEADER))
    for row in result["rows"]:
        print(format_layer_row(row))
    kernels = sorted({(row["head_dim"], row["fast"]["kernel"]) for row in result["rows"] if "kernel" in row.get("fast", {})})
    for d, kernel in kernels:
        print(f"  ours at {d} channels per head: {kernel}")
    notes = {f"{r['config']} {r['layer']} B={r['batch']} {r['pass']}: {r[i].get('skipped') or r[i]['error']}"
             for r in result["rows"] for i in IMPLS if i in r and ("skipped" in r[i] or "error" in r[i])}
    for note in sorted(notes):
        print("  " + note)


# ---- one training step --------------------------------------------------------------------------------
def train_step(cfg: Path, imgsz: int, batch: int, threads: int) -> dict:
    """Peak memory (VmHWM growth) and time of one YOLOv5 training step of `cfg` on CPU."""
    import torch
    import yaml

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    import yolov5_dattn  # noqa: F401  registers the modules
    import yolov5
    from yolov5.models.yolo import Model
    from yolov5.utils.loss import ComputeLoss

    torch.manual_seed(0)
    model = Model(str(cfg), ch=3, nc=80)
    hyp_file = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
    model.hyp = yaml.safe_load(hyp_file.read_text())
    model.train()
    loss_fn = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937)
    images = torch.rand(batch, 3, imgsz, imgsz)
    n_boxes = 8 * batch  # rows: image index, class, x, y, w, h (normalised)
    targets = torch.cat([torch.arange(batch).repeat_interleave(8).unsqueeze(1).float(),
                         torch.randint(0, 80, (n_boxes, 1)).float(),
                         torch.rand(n_boxes, 2) * 0.8 + 0.1, torch.rand(n_boxes, 2) * 0.3 + 0.02], 1)
    baseline = _reset_high_water_mark()
    started = time.perf_counter()
    loss, _ = loss_fn(model(images), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    attention = sum(type(m).__name__ == "DAttention" for m in model.modules())
    return {"cfg": str(cfg), "imgsz": imgsz, "batch": batch, "threads": threads, "seconds": seconds,
            "peak_growth_gib": (proc_status_kib("VmHWM") - baseline) / 2 ** 20,
            "process_peak_gib": proc_status_kib("VmHWM") / 2 ** 20, "dattention_layers": attention,
            "loss": float(loss)}


# ---- sparse queries (--query-ratios) ---------------------------------------------------------------------
def run_sweep(opt) -> dict:
    """Every (scale, level, batch, pass) case with one module per ratio: time (one process, calls rotating) and
    each ratio's peak memory (a fresh process each)."""
    base = {"device": opt.device, "threads": opt.threads}
    dtype = (opt.dtype or ["fp32"])[0]
    peak = in_fresh_process({**base, "what": "peak", "dtype": dtype}).get("gflops")
    impls = [f"{RATIO_IMPL}{float(r)}" for r in opt.query_ratios]
    rows = []
    for scale in opt.scales:
        for level in opt.levels:
            channels, side = LEVELS[level]
            channels = int(channels * SCALE_WIDTH[scale])
            for batch in opt.batch:
                for pass_ in opt.passes:
                    spec = {**base, "what": "case", "dtype": dtype, "channels": channels, "side": side,
                            "batch": batch, "pass": pass_, "runs": opt.runs, "case_seconds": opt.case_seconds}
                    timing = in_fresh_process({**spec, "impls": impls, "measure": "time"})
                    for impl, ratio in zip(impls, opt.query_ratios):
                        row = {"scale": scale, "level": level, "channels": channels, "hw": [side, side],
                               "batch": batch, "pass": pass_, "dtype": dtype, "query_ratio": float(ratio),
                               "queries": selected_count(side * side, float(ratio)),
                               **best_of([timing.get(impl, timing)],
                                         in_fresh_process({**spec, "impl": impl, "measure": "memory"}))}
                        pairs = timing.get("paired_vs_dense", {}).get(impl)
                        if pairs:
                            row["vs_dense"] = statistics.median(pairs)
                        local = row.get("matmul_peak_gflops") or peak
                        if "median_s" in row and local:
                            row["fraction_of_peak"] = row["gflop"] / row["median_s"] / local
                        rows.append(row)
                        print(format_sweep_row(row), file=sys.stderr, flush=True)  # progress
    return {"device": opt.device, "threads": opt.threads, "matmul_peak_gflops": peak, "rows": rows}


def selected_count(n: int, ratio: float) -> int:
    """k = ceil(ratio·n), as DAttention computes it (`yolov5_dattn.nn.query_selection`)."""
    _import_attention_modules()
    from yolov5_dattn.nn.query_selection import selected_count as count
    return int(count(n, ratio))


SWEEP_HEADER = (f"{'scale':5} {'level':5} {'C':>4} {'HxW':>6} {'B':>3} {'pass':8} | {'ratio':>5} {'queries':>7} | "
                f"{'ms':>8} {'x dense':>7} | {'MB':>7} | {'GFLOP':>7} {'%pk':>4}")


def format_sweep_row(row: dict) -> str:
    h, w = row["hw"]
    ms = f"{row['median_s'] * 1e3:.1f}" if "median_s" in row else "error"
    vs = f"{row['vs_dense']:.2f}" if "vs_dense" in row else "-"
    mb = f"{row['peak_mb']:.0f}" if "peak_mb" in row else "error"
    gflop = f"{row['gflop']:.2f}" if "gflop" in row else "-"
    pct = f"{row['fraction_of_peak'] * 100:.0f}" if "fraction_of_peak" in row else "-"
    return (f"{row['scale']:5} {row['level']:5} {row['channels']:>4} {f'{h}x{w}':>6} {row['batch']:>3} "
            f"{row['pass']:8} | {row['query_ratio']:>5g} {row['queries']:>7} | {ms:>8} {vs:>7} | {mb:>7} | "
            f"{gflop:>7} {pct:>4}")


def print_sweep(result: dict) -> None:
    peak = result["matmul_peak_gflops"]
    print(f"DAttention with sparse queries (query_ratio); device {result['device']}, {result['threads']} threads; "
          f"matmul peak {peak:.0f} GFLOP/s" if peak else "matmul peak not measured")
    print(SWEEP_HEADER)
    print("-" * len(SWEEP_HEADER))
    for row in result["rows"]:
        print(format_sweep_row(row))
    kernels = sorted({row["kernel"] for row in result["rows"] if "kernel" in row})
    print(f"  attention kernel: {', '.join(kernels)}; 'x dense': median over neighbouring calls of time / time at "
          f"ratio 1; MB: growth of the process high-water mark, fresh process")


def main(argv=None) -> int:
    opt = parse_args(argv)
    if opt.worker is not None:
        return run_worker(opt.worker)
    if opt.batch is None:
        opt.batch = ([16] if opt.train_step is not None else [1, 8] if opt.configs is not None
                     else [1] if opt.query_ratios is not None else [1, 4, 16])
    problems = [f"--batch {b}: must be at least 1" for b in opt.batch if b < 1]
    if opt.train_step is not None and len(opt.batch) != 1:
        problems.append(f"--batch {' '.join(map(str, opt.batch))}: --train-step takes one batch size")
    problems += [f"--threads {opt.threads}: must be at least 1"] * (opt.threads < 1)
    problems += [f"--runs {opt.runs}: must be at least 2"] * (opt.runs < 2)
    problems += [f"--repeats {opt.repeats}: must be at least 1"] * (opt.repeats < 1)
    if opt.json is not None and opt.json.is_dir():
        problems.append(f"--json {opt.json}: is a folder: give a file name")
    if opt.train_step is not None and not opt.train_step.is_file():
        problems.append(f"--train-step {opt.train_step}: no such file: give a model YAML such as "
                        "configs/yolov5s_c3_dattn_p3p4p5.yaml")
    if opt.device != "cpu" and not opt.device.startswith("cuda"):
        problems.append(f"--device {opt.device}: use cpu or cuda[:N]")
    if opt.configs is not None:
        problems += [f"--configs {c}: no such file or shipped config: give a model YAML such as "
                     "yolov5s_c3_dattn_p3p4p5.yaml" for c in opt.configs if not resolve_cfg(c).is_file()]
        problems += [f"--imgsz {opt.imgsz}: must be a positive multiple of 32"] * (opt.imgsz < 32 or opt.imgsz % 32 != 0)
        problems += ["--configs: times fp32 on the CPU: leave --device at cpu and --dtype at fp32"] * (
            opt.device != "cpu" or (opt.dtype or ["fp32"]) != ["fp32"])
        problems += ["--configs and --train-step: one at a time"] * (opt.train_step is not None)
    elif "sdpa" in opt.impl:
        problems.append("--impl sdpa: only with --configs")
    if opt.query_ratios is not None:
        problems += [f"--query-ratios {r:g}: each must be in (0, 1] (1: the dense layer)"
                     for r in opt.query_ratios if not 0 < r <= 1]
        problems += ["--query-ratios: one of --configs, --train-step or --query-ratios at a time"] * (
            opt.configs is not None or opt.train_step is not None)
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2

    if opt.train_step is not None:
        if opt.device != "cpu":
            print("error: --train-step measures CPU memory: leave --device at cpu", file=sys.stderr)
            return 2
        result = train_step(opt.train_step, opt.imgsz, opt.batch[0], opt.threads)
        print(f"one training step of {result['cfg']} at --imgsz {result['imgsz']} --batch {result['batch']} "
              f"({result['dattention_layers']} DAttention layers, {result['threads']} threads): "
              f"{result['seconds']:.1f} s, peak memory growth {result['peak_growth_gib']:.2f} GiB "
              f"(process peak {result['process_peak_gib']:.2f} GiB)")
    else:
        if opt.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                print(f"error: --device {opt.device}: CUDA is not available here: use --device cpu", file=sys.stderr)
                return 2
        if opt.configs is not None:
            result = run_configs(opt)
            print_layer_table(result)
        elif opt.query_ratios is not None:
            result = run_sweep(opt)
            print_sweep(result)
        else:
            result = run_table(opt)
            print_table(result)
    if opt.json is not None:
        opt.json.parent.mkdir(parents=True, exist_ok=True)
        partial = opt.json.with_name(opt.json.name + ".part")
        partial.write_text(json.dumps(result, indent=2))
        os.replace(partial, opt.json)  # never a half-written file
        print(f"wrote {opt.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
