#!/usr/bin/env python
"""Does DAttention run correctly, and fast, on this GPU? One command, no data, no internet: one table, and exit
status 1 if any row fails.

    python scripts/check_cuda.py                          # cuda:0, a few minutes
    python scripts/check_cuda.py --device cuda:1 --sections accuracy backends
    python scripts/check_cuda.py --device cpu --dry-run   # the same checks at tiny sizes on the CPU (CI smoke test)

Sections (rows of the one table):

accuracy   every DAttention variant (position terms dwc / none / table / fixed / log_cpb, unbounded offsets,
           no offsets, and dwc on a channels-last input), forward and backward on the device in fp32, fp16
           autocast and bf16 autocast, against the einsum reference (`yolov5_dattn/nn/reference.py`) in fp64 on
           the CPU with the same weights. `out`: max |y - y_ref| / max |y_ref|; `cos`: cosine similarity of all
           gradients (input and parameters) with the reference's; `pos`: the sampling positions' dtype under
           autocast (must be fp32). Tolerances (PyTorch's defaults: cuDNN convolutions in TF32 on Ampere and
           later, matmuls in full fp32):
               fp32  out <= 5e-3, cos >= 0.999
               fp16  out <= 1e-2, cos >= 0.99
               bf16  out <= 5e-2, cos >= 0.95   (bf16 keeps 8 bits of mantissa; unbounded offsets are the
                                                 most sensitive: 0.99 measured on the CPU)
train      one AMP training step (fp16 autocast + GradScaler, as both hosts train on CUDA) of
           yolov5l_c3_dattn (YOLOv5) and yolo11n-c3k2-dattn (ultralytics) on random images and boxes: the loss
           is finite, every DAttention weight moves; time per step and peak memory.
compile    `torch.compile` (inductor) of a DAttention, forward and backward under fp16 autocast, in one graph
           (`fullgraph=True`): the numbers against eager (out <= 1e-2, cos >= 0.999), the compile time, and eager
           against compiled time.
speed      P3 / P4 / P5 at l scale (C = 128 / 256 / 512 on 80 / 40 / 20 px maps: imgsz 640), batch 1 / 8 / 32,
           forward + backward under fp16 autocast: median time and peak memory (`torch.cuda.max_memory_allocated`
           over the call) of DAttention against the einsum form with the same weights; the einsum form running
           out of memory is reported, not a failure.
backends   which attention kernel runs, per variant and precision, in training and in inference: PyTorch's SDPA
           backend (flash, efficient, cudnn, math: the one PyTorch's own selector picks for the call's arguments),
           the explicit form (scores -> softmax, when a bias needs its gradient) or our CPU kernel.

`--dry-run` runs every section at tiny sizes (n scale, imgsz 64, small maps and batches, inductor replaced by
`aot_eager`), to check on a CPU that the script itself works. A device that is not there is refused before any
work: one `error:` line, exit status 2.
"""
import argparse
import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics probes the network at import otherwise

__all__ = ["main", "parse_args", "refusal"]

SECTIONS = ("accuracy", "train", "compile", "speed", "backends")
VARIANTS = {"dwc": {}, "none": {"use_pe": False}, "table": {"dwc_pe": False},
            "fixed": {"dwc_pe": False, "fixed_pe": True}, "log_cpb": {"dwc_pe": False, "log_cpb": True},
            "unbounded": {"offset_range_factor": -1}, "no_off": {"no_off": True, "stride": 2}}
# (max relative output error, min gradient cosine) per precision: see the module docstring
TOLERANCE = {"fp32": (5e-3, 0.999), "fp16": (1e-2, 0.99), "bf16": (5e-2, 0.95)}
LEVELS = {"P3": (128, 80), "P4": (256, 40), "P5": (512, 20)}  # l scale at imgsz 640, as benchmark_attention.py
BATCHES = (1, 8, 32)
MB = 2 ** 20


@dataclass
class Row:
    """One line of the table. status: 'ok', 'FAIL', 'info' (a measurement with no limit) or 'skip'."""
    section: str
    case: str
    precision: str
    result: str
    limit: str
    status: str


@dataclass
class Sizes:
    """What each section runs at: full (the GPU check) or --dry-run (tiny, for a CPU)."""
    channels: int
    heads: int
    groups: int
    side: int
    batch: int
    yolov5_cfg: Path
    ultralytics_cfg: Path
    imgsz: int
    train_batch: int
    levels: Dict[str, Tuple[int, int]]
    batches: Tuple[int, ...]
    runs: int
    compile_backend: str


FULL = Sizes(128, 8, 4, 16, 2, ROOT / "configs" / "yolov5l_c3_dattn.yaml",
             ROOT / "configs" / "ultralytics" / "yolo11n-c3k2-dattn.yaml", 640, 8, LEVELS, BATCHES, 10, "inductor")
DRY = Sizes(32, 4, 2, 8, 2, ROOT / "configs" / "yolov5n_c3_dattn.yaml",
            ROOT / "configs" / "ultralytics" / "yolo11n-c3k2-dattn.yaml", 64, 2,
            {"P3": (32, 16), "P4": (64, 8), "P5": (128, 4)}, (2,), 2, "aot_eager")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --dry-run: a smoke test)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every section at tiny sizes (n scale, imgsz 64, small maps, aot_eager for inductor)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="which to run")
    parser.add_argument("--tol-scale", type=float, default=1.0,
                        help="multiply every error limit by this (and narrow the cosine limits alike): < 1 is stricter")
    return parser.parse_args(argv)


def refusal(args: argparse.Namespace) -> str:
    """Why the check cannot run here (one line), or '' when it can. Starts no work on any device."""
    import torch
    try:
        device = torch.device(args.device)
    except RuntimeError:
        return f"--device {args.device!r}: give cuda, cuda:N or cpu"
    if device.type not in ("cuda", "cpu"):
        return f"--device {args.device!r}: give cuda, cuda:N or cpu"
    if args.tol_scale < 0 or not math.isfinite(args.tol_scale):
        return f"--tol-scale {args.tol_scale}: give a finite number >= 0"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            return (f"--device {args.device}: no CUDA GPU is visible to PyTorch ({torch.__version__}, {build}); run "
                    f"this on a machine with an NVIDIA GPU, or use --device cpu --dry-run for a smoke test")
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return ""


# ---- helpers ------------------------------------------------------------------------------------------------------
def _dtype(precision: str):
    import torch
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _autocast(device, precision: str):
    import torch
    dtype = _dtype(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _precisions(device) -> List[str]:
    import torch
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return ["fp32", "fp16"]
    return ["fp32", "fp16", "bf16"]


def _limits(precision: str, scale: float) -> Tuple[float, float]:
    """(max relative output error, min cosine), `scale` applied to the error and to 1 - cosine."""
    err, cos = TOLERANCE[precision]
    return err * scale, 1.0 - (1.0 - cos) * scale


def _cosine(a, b) -> float:
    import torch
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:150]}" if text else type(e).__name__


def _peak_mb(device, fn: Callable[[], object]) -> Optional[float]:
    """Memory the call allocated at its peak beyond what was allocated before it (CUDA only; None on CPU)."""
    import torch
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MB


def _mb(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"


def _is_oom(e: BaseException) -> bool:
    import torch
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _module(kind: str, sizes: Sizes, seed: int = 0):
    import torch
    from yolov5_dattn.nn.dattention import DAttention
    torch.manual_seed(seed)
    return DAttention(sizes.channels, (sizes.side, sizes.side), n_heads=sizes.heads, n_groups=sizes.groups,
                      **VARIANTS[kind])


def _grads(module, x) -> List:
    """The input's gradient, then every parameter's (by name), as flat fp64 CPU tensors; zeros for none."""
    import torch
    out = [x.grad.detach().double().cpu().flatten()]
    for _, p in sorted(module.named_parameters()):
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out.append(g.detach().double().cpu().flatten())
    return out


# ---- accuracy -----------------------------------------------------------------------------------------------------
def check_accuracy(device, sizes: Sizes, scale: float) -> List[Row]:
    import torch
    from yolov5_dattn.nn.reference import ReferenceDAttention
    rows = []
    cases = [(kind, kind, False) for kind in VARIANTS] + [("dwc, channels-last input", "dwc", True)]
    for case, kind, channels_last in cases:
        module = _module(kind, sizes).train()
        torch.manual_seed(1)
        x = torch.randn(sizes.batch, sizes.channels, sizes.side, sizes.side)
        w = torch.randn(x.shape)  # the loss sum(y * w): every output element gets its own gradient
        ref = ReferenceDAttention(sizes.channels, (sizes.side, sizes.side), n_heads=sizes.heads,
                                  n_groups=sizes.groups, **VARIANTS[kind]).double()
        ref.load_state_dict(module.state_dict())
        x_ref = x.double().requires_grad_()
        y_ref = ref(x_ref)
        (y_ref * w.double()).sum().backward()
        g_ref = torch.cat(_grads(ref, x_ref))
        for precision in _precisions(device):
            err_limit, cos_limit = _limits(precision, scale)
            limit = f"out <= {err_limit:.0e}, cos >= {cos_limit:.4g}, pos fp32"
            try:
                m = copy.deepcopy(module).to(device)
                layout = torch.channels_last if channels_last else torch.contiguous_format
                xd = x.to(device).clone(memory_format=layout).requires_grad_()  # a leaf of its own per precision
                with _autocast(device, precision):
                    y = m(xd)
                (y.float() * w.to(device)).sum().backward()
                err = float((y.detach().double().cpu() - y_ref.detach()).abs().max() / y_ref.detach().abs().max())
                cos = _cosine(torch.cat(_grads(m, xd)), g_ref)
                m.record = True
                with torch.no_grad(), _autocast(device, precision):
                    m(xd)
                pos = m.recorded["pos"]
                pos_ok = pos.dtype == torch.float32 and pos.device.type == device.type
                ok = err <= err_limit and cos >= cos_limit and pos_ok and math.isfinite(err)
                rows.append(Row("accuracy", case, precision, f"out {err:.1e}, cos {cos:.5f}, pos "
                                f"{str(pos.dtype).replace('torch.float', 'fp')}", limit, "ok" if ok else "FAIL"))
            except Exception as e:  # a row of the table, not a traceback: the other rows still run
                rows.append(Row("accuracy", case, precision, _one_line(e), limit, "FAIL"))
    return rows


# ---- one training step of each host ---------------------------------------------------------------------------------
def _targets(batch: int):
    """Two boxes per image, normalised xywh, classes 0..9: (image, class, x, y, w, h) rows."""
    import torch
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(batch):
        for _ in range(2):
            xy = torch.rand(2, generator=g) * 0.6 + 0.2
            wh = torch.rand(2, generator=g) * 0.3 + 0.1
            rows.append(torch.cat((torch.tensor([float(i), float(torch.randint(10, (1,), generator=g))]), xy, wh)))
    return torch.stack(rows)


def _yolov5_step(device, sizes: Sizes):
    """(model, step): YOLOv5's DetectionModel and ComputeLoss, hyp.scratch-low."""
    import yaml
    from yolov5_dattn.analysis.profiling import build_model
    import yolov5
    from yolov5.utils.loss import ComputeLoss
    model = build_model(str(sizes.yolov5_cfg), nc=80).to(device).train()
    model.hyp = yaml.safe_load((Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    criterion = ComputeLoss(model)
    targets = _targets(sizes.train_batch).to(device)

    def loss(images):
        return criterion(model(images), targets)[0].sum()
    return model, loss


def _ultralytics_step(device, sizes: Sizes):
    """(model, step): ultralytics' DetectionModel and its own loss (`model(batch)`), default hyperparameters."""
    import yolov5_dattn.hosts.ultralytics  # noqa: F401  (our blocks for parse_model)
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    model = YOLO(str(sizes.ultralytics_cfg)).model.to(device).train()
    model.args = get_cfg()
    t = _targets(sizes.train_batch).to(device)
    batch = {"batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:]}

    def loss(images):
        return model({**batch, "img": images})[0].sum()
    return model, loss


def check_train(device, sizes: Sizes) -> List[Row]:
    import torch
    from yolov5_dattn.nn.dattention import DAttention
    rows = []
    amp = torch.float16 if device.type == "cuda" else torch.bfloat16  # CPU autocast for the dry run
    precision = "fp16 AMP" if device.type == "cuda" else "bf16 AMP"
    for host, make, cfg in (("yolov5", _yolov5_step, sizes.yolov5_cfg),
                            ("ultralytics", _ultralytics_step, sizes.ultralytics_cfg)):
        case = f"{host} {cfg.stem} {sizes.train_batch}x{sizes.imgsz}"
        limit = "loss finite, every DAttention weight moves"
        try:
            model, loss_fn = make(device, sizes)
            attention = {n: p for n, p in model.named_parameters() if ".attention." in n and n.endswith("weight")}
            attention = {n: p for n, p in attention.items() if p.requires_grad}
            before = {n: p.detach().clone() for n, p in attention.items()}
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
            images = torch.rand(sizes.train_batch, 3, sizes.imgsz, sizes.imgsz, device=device)
            losses, times = [], []

            def step():
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=amp):
                    loss = loss_fn(images)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))

            skipped = 0
            while True:  # GradScaler skips the steps whose fp16 gradients overflowed while it finds its scale
                scale = scaler.get_scale() if scaler.is_enabled() else 1.0
                step()
                if not scaler.is_enabled() or scaler.get_scale() >= scale or skipped == 10:
                    break
                skipped += 1
            for _ in range(2):
                start = time.perf_counter()
                peak = _peak_mb(device, step)
                times.append((time.perf_counter() - start) * 1e3)
            moved = [n for n, p in attention.items() if not torch.equal(p.detach(), before[n])]
            n_attention = sum(isinstance(m, DAttention) for m in model.modules())
            ok = all(math.isfinite(v) for v in losses) and attention and len(moved) == len(attention)
            rows.append(Row("train", case, precision,
                            f"loss {losses[-1]:.3g}, {len(moved)}/{len(attention)} weights moved in {n_attention} "
                            f"DAttention ({skipped} steps skipped by the scaler), {min(times):.0f} ms/step, peak "
                            f"{_mb(peak)}", limit,
                            "ok" if ok else "FAIL"))
        except Exception as e:
            rows.append(Row("train", case, precision, _one_line(e), limit, "FAIL"))
    return rows


# ---- torch.compile ---------------------------------------------------------------------------------------------------
def check_compile(device, sizes: Sizes) -> List[Row]:
    import torch
    from yolov5_dattn.analysis.profiling import median_latency_ms
    precision = "fp16" if device.type == "cuda" else "fp32"
    limit = "out <= 1e-2, cos >= 0.999, one graph"
    case = f"dwc {sizes.compile_backend}"
    try:
        module = _module("dwc", sizes).to(device).train()
        x = torch.randn(sizes.batch, sizes.channels, sizes.side, sizes.side, device=device)
        w = torch.randn(x.shape, device=device)

        def run(fn):
            module.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_()
            with _autocast(device, precision):
                y = fn(xi)
            (y.float() * w).sum().backward()
            return y.detach().float(), torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in module.parameters()])

        y_eager, g_eager = run(module)
        torch._dynamo.reset()
        compiled = torch.compile(module, backend=sizes.compile_backend, fullgraph=True)
        start = time.perf_counter()
        y_comp, g_comp = run(compiled)
        compile_s = time.perf_counter() - start
        err = float((y_comp - y_eager).abs().max() / y_eager.abs().max())
        cos = _cosine(g_comp, g_eager)
        timed = median_latency_ms([lambda: run(module), lambda: run(compiled)], device, warmup=1, runs=sizes.runs)
        eager_ms, comp_ms = (t["median"] for t in timed)
        ok = err <= 1e-2 and cos >= 0.999
        return [Row("compile", case, precision, f"out {err:.1e}, cos {cos:.5f}; compiled in {compile_s:.0f} s; "
                    f"fwd+bwd {eager_ms:.2f} ms eager, {comp_ms:.2f} ms compiled", limit, "ok" if ok else "FAIL")]
    except Exception as e:
        return [Row("compile", case, precision, _one_line(e), limit, "FAIL")]


# ---- which attention kernel runs -------------------------------------------------------------------------------------
def attention_kernel(fn: Callable[[], object]) -> str:
    """The attention kernel a call ran: our CPU kernel, 'explicit' (scores -> softmax), or PyTorch's SDPA with the
    backend PyTorch's own selector (`torch._fused_sdp_choice`, what SDPA dispatches on) picks for that call's
    arguments: flash, efficient, cudnn or math."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Seen(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.kernels: List[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name == "scaled_dot_product_attention":
                try:
                    backend = torch.nn.attention.SDPBackend(torch._fused_sdp_choice(*args, **kwargs)).name
                    self.kernels.append(backend.replace("_ATTENTION", "").lower())
                except (AttributeError, RuntimeError, TypeError, ValueError):
                    self.kernels.append("sdpa (backend unknown)")
            elif "attention_cpu" in str(func) and "backward" not in str(func):
                self.kernels.append("ours (CPU kernel)")
            elif name == "softmax":
                self.kernels.append("explicit")
            return func(*args, **kwargs)

    with Seen() as seen:
        fn()
    return ", ".join(sorted(set(seen.kernels))) or "none found"


def check_backends(device, sizes: Sizes) -> List[Row]:
    import torch
    rows = []
    for kind in ("dwc", "none", "table", "fixed", "log_cpb"):
        for precision in _precisions(device):
            found = {}
            try:
                module = _module(kind, sizes).to(device)
                x = torch.randn(sizes.batch, sizes.channels, sizes.side, sizes.side, device=device)
                for mode in ("train", "eval"):
                    module.train(mode == "train")

                    def call():
                        with torch.set_grad_enabled(mode == "train"), _autocast(device, precision):
                            y = module(x)
                        if mode == "train":
                            y.float().sum().backward()
                    found[mode] = attention_kernel(call)
                rows.append(Row("backends", kind, precision, f"train: {found['train']}; inference: {found['eval']}",
                                "", "info"))
            except Exception as e:
                rows.append(Row("backends", kind, precision, _one_line(e), "", "FAIL"))
    return rows


OUT_OF_MEMORY = -1.0


def _reference_peak_mb(device, fn: Callable[[], object]) -> Optional[float]:
    """`_peak_mb` of the einsum form's call, or OUT_OF_MEMORY with its memory given back (outside the handler,
    whose traceback would keep the failed call's tensors alive)."""
    import torch
    try:
        return _peak_mb(device, fn)
    except Exception as e:  # noqa: BLE001 (only out-of-memory is expected; anything else is raised again)
        if not _is_oom(e):
            raise
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return OUT_OF_MEMORY


# ---- speed against the einsum form -----------------------------------------------------------------------------------
def check_speed(device, sizes: Sizes) -> List[Row]:
    import torch
    from yolov5_dattn.analysis.profiling import median_latency_ms
    from yolov5_dattn.nn.dattention import DAttention
    from yolov5_dattn.nn.reference import ReferenceDAttention
    precision = "fp16" if device.type == "cuda" else "fp32"  # the CPU dry run: fp16 matmuls there are emulated
    rows = []
    for level, (channels, side) in sizes.levels.items():
        torch.manual_seed(0)
        fast = DAttention(channels, (side, side)).to(device).train()
        ref = ReferenceDAttention(channels, (side, side)).to(device).train()
        ref.load_state_dict(fast.state_dict())
        for batch in sizes.batches:
            case = f"{level} C{channels} {side}x{side} b{batch}"
            try:
                x = torch.randn(batch, channels, side, side, device=device, dtype=_dtype(precision) or torch.float32)

                def step(module):
                    def call():
                        module.zero_grad(set_to_none=True)
                        with _autocast(device, precision):
                            y = module(x)
                        y.float().sum().backward()
                    return call

                kernel = attention_kernel(step(fast))
                fast_mb = _peak_mb(device, step(fast))
                ref_mb = _reference_peak_mb(device, step(ref))
                ref.zero_grad(set_to_none=True)
                if ref_mb is OUT_OF_MEMORY:
                    fast_ms = median_latency_ms([step(fast)], device, warmup=1, runs=sizes.runs)[0]["median"]
                    rows.append(Row("speed", case, precision, f"DAttention {fast_ms:.2f} ms, {_mb(fast_mb)} "
                                    f"({kernel}); einsum: out of memory", "", "info"))
                    continue
                ref_ms, fast_ms = (t["median"] for t in median_latency_ms([step(ref), step(fast)], device,
                                                                          warmup=1, runs=sizes.runs))
                memory = f", {ref_mb / fast_mb:.1f}x less memory" if fast_mb else ""
                rows.append(Row("speed", case, precision,
                                f"DAttention {fast_ms:.2f} ms, {_mb(fast_mb)} ({kernel}); einsum {ref_ms:.2f} ms, "
                                f"{_mb(ref_mb)}: {ref_ms / fast_ms:.1f}x faster{memory}", "", "info"))
            except Exception as e:
                rows.append(Row("speed", case, precision, _one_line(e), "", "FAIL"))
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


# ---- the table -------------------------------------------------------------------------------------------------------
def format_table(rows: Sequence[Row]) -> str:
    head = Row("section", "case", "precision", "result", "limit", "status")
    fields = ("section", "case", "precision", "result", "limit", "status")
    widths = {f: max(len(getattr(r, f)) for r in (head, *rows)) for f in fields}
    lines = []
    for r in (head, *rows):
        lines.append("  ".join(getattr(r, f).ljust(widths[f]) for f in fields).rstrip())
        if r is head:
            lines.append("  ".join("-" * widths[f] for f in fields))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = refusal(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import torch
    from yolov5_dattn.analysis.profiling import device_description
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    sizes = DRY if args.dry_run else FULL
    checks = {"accuracy": lambda: check_accuracy(device, sizes, args.tol_scale),
              "train": lambda: check_train(device, sizes), "compile": lambda: check_compile(device, sizes),
              "speed": lambda: check_speed(device, sizes), "backends": lambda: check_backends(device, sizes)}
    start = time.perf_counter()
    rows: List[Row] = []
    for section in SECTIONS:
        if section in args.sections:
            rows += checks[section]()
    failed = sum(r.status == "FAIL" for r in rows)
    cuda = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else ""
    print(f"check_cuda{' --dry-run' if args.dry_run else ''}: {device_description(device)}; "
          f"torch {torch.__version__}{cuda}; {time.perf_counter() - start:.0f} s; {failed} of {len(rows)} rows failed")
    print(format_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
