"""What the attention costs: a model against its YOLOv5 baseline, in parameters, GFLOPs, time and memory.

`compare()` measures a list of (model, baseline) pairs and returns a JSON-ready dict (the schema of
`scripts/compare.py --json`); `format_table()` renders it. The FLOP conventions are those of
`yolov5_dattn.analysis.flops`, the measurement rules those of `yolov5_dattn.analysis.profiling`.

Two hosts: YOLOv5 model YAMLs (depth/width multiples) and ultralytics ones (`scales:`, C2f/C3k2/AIFI...; our
configs/ultralytics/). The host is read from the configs (`model_host`); the ultralytics specifics (scale from
the file name, the stock model it is compared against, building) are in `yolov5_dattn.hosts.ultralytics.baseline`,
imported only for ultralytics configs.
"""
import re
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from yolov5_dattn.errors import UserError
from .flops import FlopReport, count_flops, image_shape
from .profiling import (build_model, collect_memory_worker, device_description, load_average, measure_peaks,
                        median_latency_ms, memory_supported, module_times_ms, start_memory_worker)
from .stamp import stamp

# (depth_multiple, width_multiple) of YOLOv5's scales
SCALES = {(0.33, 0.25): "n", (0.33, 0.5): "s", (0.67, 0.75): "m", (1.0, 1.0): "l", (1.33, 1.25): "x"}


def yolov5_models_dir() -> Path:
    """The `models/` folder of the installed yolov5 package (holds yolov5{n,s,m,l,x}.yaml and segment/)."""
    import yolov5
    return Path(yolov5.__file__).parent / "models"


def resolve_cfg(cfg: str, flag: str = "--cfg") -> Path:
    """A model YAML given as a path, by a shipped name (`yolov5s_c3_dattn.yaml`), or by name from the yolov5
    package (`yolov5s.yaml`, `yolov5s-seg.yaml`)."""
    from yolov5_dattn.shipped import resolve
    path = Path(resolve(cfg, "cfg"))
    if path.is_file():
        return path
    name = path.name if path.suffix else path.name + ".yaml"
    for candidate in (yolov5_models_dir() / name, yolov5_models_dir() / "segment" / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"{flag} {cfg}: no such file, and no model of that name in the yolov5 package "
                    f"(e.g. yolov5s.yaml, yolov5s-seg.yaml): give the path of a model YAML")


def _read_yaml(path: Path, flag: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{flag} {path}: not a readable YAML ({type(e).__name__}): fix or replace the file") from e
    if not isinstance(data, dict) or "backbone" not in data or "head" not in data:
        raise UserError(f"{flag} {path}: not a YOLOv5 model YAML (no backbone/head): give a model YAML such as "
                        f"configs/yolov5s_c3_dattn.yaml")
    return data


def is_segmentation(data: dict) -> bool:
    """True when the model YAML ends in YOLOv5's Segment head."""
    return "Segment" in str(data.get("head"))


def default_baseline(cfg: Path) -> Path:
    """The same-scale YOLOv5 model of the same task shipped with yolov5: yolov5l.yaml, segment/yolov5l-seg.yaml...

    The scale comes from the YAML's depth/width multiples, else from a 'yolov5<scale>' in the file name.
    """
    data = _read_yaml(cfg, "--cfg")
    multiples = (round(float(data.get("depth_multiple", 0)), 2), round(float(data.get("width_multiple", 0)), 2))
    scale = SCALES.get(multiples)
    if scale is None:
        match = re.search(r"yolov5([nsmlx])", cfg.stem)
        if not match:
            raise UserError(f"--cfg {cfg}: cannot tell its YOLOv5 scale (depth/width multiples {multiples}): "
                            f"pass --baseline, e.g. --baseline yolov5s.yaml")
        scale = match.group(1)
    name = f"segment/yolov5{scale}-seg.yaml" if is_segmentation(data) else f"yolov5{scale}.yaml"
    return yolov5_models_dir() / name


def pairs_to_compare(cfgs: Sequence[str], baseline: Optional[str]) -> List[Tuple[Path, Path]]:
    """[(cfg, baseline)] for the `--cfg` list; `--baseline` applies to every cfg when given."""
    pairs = []
    for cfg in cfgs:
        path = resolve_cfg(cfg, "--cfg")
        _read_yaml(path, "--cfg")
        base = resolve_cfg(baseline, "--baseline") if baseline else default_baseline(path)
        _read_yaml(base, "--baseline")
        pairs.append((path, base))
    return pairs


# ---- the host switch -----------------------------------------------------------------------------
# module names only ultralytics YAMLs use (YOLOv5's have C3/SPPF/Detect-with-anchors and no `scales:`)
ULTRALYTICS_MODULES = frozenset({
    "C2f", "C3k2", "C3k", "C2PSA", "PSABlock", "C2fPSA", "AIFI", "RTDETRDecoder", "HGStem", "HGBlock", "RepC3",
    "ResNetLayer", "A2C2f", "SCDown", "PSA", "C2fAttn", "ImagePoolingAttn", "v10Detect", "ELAN1", "RepNCSPELAN4",
    "ADown", "SPPELAN", "CBLinear", "CBFuse", "C2f_DAttention", "C3k2_DAttention", "C3k_DAttention",
    "C2PSA_DAttention", "AIFI_DAttention"})
HOSTS = {"yolov5": "YOLOv5", "ultralytics": "ultralytics"}


def is_ultralytics_yaml(data: dict, path: Optional[Path] = None) -> bool:
    """True for an ultralytics model dict: under a configs/ultralytics/ folder, with `scales:`, or naming modules
    only ultralytics has (C2f, C3k2, AIFI, ...)."""
    if path is not None and Path(path).parent.name == "ultralytics" and Path(path).parent.parent.name == "configs":
        return True
    if not isinstance(data, dict):
        return False
    if "scales" in data:
        return True
    layers = [layer for part in ("backbone", "head") if isinstance(data.get(part), list) for layer in data[part]]
    return any(isinstance(layer, list) and len(layer) > 2 and layer[2] in ULTRALYTICS_MODULES for layer in layers)


def model_host(cfg: str, flag: str = "--cfg") -> Tuple[str, Path]:
    """('yolov5' or 'ultralytics', the path to build) for a `--cfg`/`--baseline` value.

    A YOLOv5 lookup first (`resolve_cfg`: a file, a shipped name, a yolov5 package model) and the file's content
    decides; a name YOLOv5 does not know is looked up as an ultralytics model (`baseline.resolve`: a scaled name
    like yolo11n-c3k2-dattn.yaml, ultralytics' yolo11n.yaml). UserError when neither knows it.
    """
    try:
        path = resolve_cfg(cfg, flag)
    except UserError:
        path = None
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None  # `_read_yaml` says what is wrong with it
        return ("ultralytics" if is_ultralytics_yaml(data, path) else "yolov5"), path
    from yolov5_dattn.hosts.ultralytics import baseline
    spec = baseline.resolve(cfg)
    if spec is None:
        raise UserError(f"{flag} {cfg}: no such file, and no model of that name in the yolov5 or ultralytics "
                        f"packages or configs/ultralytics (e.g. yolov5s.yaml, yolo11n.yaml, "
                        f"yolo11n-c3k2-dattn.yaml): give the path of a model YAML")
    return "ultralytics", spec


@dataclass(frozen=True)
class ComparisonHost:
    """What `compare` needs of a host: reading a model YAML, building a model, measuring its memory in a fresh
    process, and the device FLOPs are counted on ('meta' where the forward needs no tensor values)."""
    name: str
    read_yaml: Callable[[Path, str], dict]
    build: Callable
    start_memory_worker: Callable
    flops_device: str


YOLOV5 = ComparisonHost("yolov5", _read_yaml, build_model, start_memory_worker, "meta")


def ultralytics_host() -> ComparisonHost:
    """The ultralytics `ComparisonHost` (imports ultralytics and installs our blocks)."""
    from yolov5_dattn.hosts.ultralytics import baseline
    # on CPU, not `meta`: ultralytics' heads read tensor values (make_anchors)
    return ComparisonHost("ultralytics", baseline.read_yaml, baseline.build_model, baseline.start_memory_worker, "cpu")


def _mixed(cfgs: Sequence[str], hosts: Sequence[str]) -> UserError:
    named = ", ".join(f"{c} ({HOSTS[h]})" for c, h in zip(cfgs, hosts))
    return UserError(f"--cfg/--baseline mix YOLOv5 and ultralytics models ({named}): compare each host's models "
                     f"in a call of their own")


def host_pairs(cfgs: Sequence[str], baseline: Optional[str]) -> Tuple[ComparisonHost, List[Tuple[Path, Path]]]:
    """The host of the `--cfg` list and its [(cfg, baseline)] pairs (`pairs_to_compare` for YOLOv5).

    UserError for a name neither host knows, or YOLOv5 and ultralytics models in one call."""
    found = [model_host(cfg, "--cfg") for cfg in cfgs]
    hosts = [h for h, _ in found]
    base = None
    if baseline:
        try:
            base = model_host(baseline, "--baseline")
        except UserError:
            if "yolov5" not in hosts:
                raise
            base = None  # YOLOv5's own lookup below says what is wrong with it
    if len(set(hosts + ([base[0]] if base else []))) > 1:
        raise _mixed([*cfgs, *([baseline] if base else [])], hosts + ([base[0]] if base else []))
    if hosts[0] == "yolov5":
        return YOLOV5, pairs_to_compare(cfgs, baseline)
    from yolov5_dattn.hosts.ultralytics import baseline as ultra
    host = ultralytics_host()
    if base:  # checked once: it is every cfg's baseline
        ultra.model_scale(base[1], ultra.read_yaml(base[1], "--baseline"), "--baseline")
    pairs = []
    for _, path in found:
        ultra.model_scale(path, ultra.read_yaml(path, "--cfg"), "--cfg")
        pairs.append((path, base[1] if base else ultra.stock_baseline(path, "--cfg")))
    return host, pairs


def parse_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:1' or YOLOv5's '0' -> torch.device; refuses a GPU that is not there."""
    text = str(device).strip().lower()
    text = f"cuda:{text}" if text.isdigit() else text
    try:
        dev = torch.device(text)
    except RuntimeError as e:
        raise UserError(f"--device {device}: not a device name: use cpu, cuda, cuda:N or N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here: use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: only cpu and cuda are supported")
    return dev


def _build(cfg: Path, nc: Optional[int], flag: str, builder: Callable = build_model):
    try:
        return builder(str(cfg), nc)
    except Exception as e:  # an unknown module, bad arguments...: one line naming the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{flag} {cfg}: cannot build the model ({type(e).__name__}: {reason}): fix the YAML") from e


def _layers(report: FlopReport, times: Dict[str, float]) -> List[dict]:
    """Per-DAttention breakdown: FLOPs (and of them the attention matmuls), share of the model's FLOPs and time."""
    total_time = times.get("") or float("nan")
    rows = []
    for name in report.dattention_modules:
        flops = report.module_flops(name)
        parts = name.split(".")
        rows.append({
            "name": name,
            "layer": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None,
            "type": "DAttention",
            "gflops": flops / 1e9,
            "gflops_attention_matmuls": report.attention_matmuls_of(name) / 1e9,
            "flops_share": flops / report.total if report.total else 0.0,
            "time_ms": times.get(name),
            "time_share": times[name] / total_time if name in times else None,
        })
    return rows


def compare(cfgs: Sequence[str], baseline: Optional[str] = None, imgsz: Sequence[int] = (640,), batch: int = 1,
            device: str = "cpu", runs: int = 10, warmup: int = 2, memory: bool = True,
            train_step: bool = False) -> dict:
    """Measure each `--cfg` model and its baseline. Returns the `--json` dict (baselines before their models).

    Args:
        cfgs: model YAMLs, all YOLOv5 or all ultralytics; baseline: one YAML for all of them (default: each one's
            same-scale YOLOv5 model; for ultralytics, the stock ultralytics model of its family, scale and task);
        imgsz: [s] or [h, w]; batch; device: 'cpu', 'cuda', ...; runs/warmup: timed/untimed forwards;
        memory: measure peak memory (CPU: in a fresh subprocess);
        train_step: also time a training step (forward + backward in train mode, models in turns).
    The dict starts with `commit` and `date` (`stamp.stamp()`: which code measured, and when); an ultralytics
    comparison also names its `host` and the `ultralytics` version.
    Raises UserError on bad input, before any measurement.
    """
    if batch < 1:
        raise UserError(f"--batch {batch}: must be at least 1")
    if runs < 1 or warmup < 0:
        raise UserError(f"--runs {runs} / --warmup {warmup}: need at least 1 timed run and no negative warm-up")
    h, w = image_shape(list(imgsz))
    dev = parse_device(device)
    host, pairs = host_pairs(cfgs, baseline)

    entries, seen = [], {}
    for cfg, base in pairs:
        nc = host.read_yaml(cfg, "--cfg").get("nc")
        for path, flag, of in ((base, "--baseline", None), (cfg, "--cfg", base)):
            key = (str(path.resolve()), nc)
            if key not in seen:
                seen[key] = len(entries)
                entries.append({"cfg": path, "flag": flag, "nc": nc, "baseline_cfg": of})
    for entry in entries:
        entry["model"] = model = _build(entry["cfg"], entry["nc"], entry["flag"], host.build)
        stride = int(model.stride.max())
        if h % stride or w % stride or h <= 0 or w <= 0:
            up = lambda s: max(stride, -(-s // stride) * stride)  # noqa: E731
            raise UserError(f"--imgsz {' '.join(map(str, imgsz))}: not a multiple of the models' largest stride "
                            f"{stride}: use --imgsz {up(h)}" + (f" {up(w)}" if h != w else ""))

    shape = [batch, 3, h, w]
    provenance = stamp()  # the start of the measurement
    use_memory = memory and memory_supported(dev)
    worker = None
    if use_memory and dev.type == "cpu":  # starts now; waited for before any timing
        worker = host.start_memory_worker([e["cfg"] for e in entries], [e["nc"] for e in entries], shape)
    for entry in entries:
        entry["flops"] = count_flops(entry["model"], [h, w], batch, device=host.flops_device)
        entry["train_flops"] = count_flops(entry["model"], [h, w], batch, device=host.flops_device, train_step=True)
    peaks = collect_memory_worker(worker, len(entries)) if worker else [None] * len(entries)

    inputs = []
    for entry, peak in zip(entries, peaks):
        entry["model"] = entry["model"].to(dev).eval()
        inputs.append(torch.zeros(*shape, device=dev))
        if use_memory and dev.type == "cuda":
            peak = measure_peaks(entry["model"], inputs[-1])
            entry["model"].eval()
        entry["peak"] = peak
    with torch.no_grad():
        latencies = median_latency_ms([lambda m=e["model"], x=x: m(x) for e, x in zip(entries, inputs)], dev,
                                      warmup=warmup, runs=runs)
    load = load_average()  # the last minute: the timing
    steps = [None] * len(entries)
    if train_step:
        steps = median_latency_ms([functools.partial(_train_step, e["model"], x) for e, x in zip(entries, inputs)],
                                  dev, warmup=max(warmup, 1), runs=runs)
        for entry in entries:
            entry["model"].eval()

    models = []
    for entry, x, latency in zip(entries, inputs, latencies):
        model, report, peak = entry["model"], entry["flops"], entry["peak"]
        times = module_times_ms(model, x, report.dattention_modules, runs=min(runs, 3)) \
            if report.dattention_modules else {}
        base = entry["baseline_cfg"]
        models.append({
            "name": entry["cfg"].stem,
            "cfg": str(entry["cfg"]),
            "baseline": base.stem if base is not None else None,
            "params": sum(p.numel() for p in model.parameters()),
            "gflops_thop": report.thop / 1e9,
            "gflops": report.total / 1e9,
            "gflops_thop_missed": report.thop_missed / 1e9,
            "gflops_attention": report.attention / 1e9,
            "gflops_attention_matmuls": report.attention_matmuls / 1e9,
            "gflops_train_step": entry["train_flops"].total / 1e9,
            "latency_ms": latency["median"],
            "latency_range_ms": [latency["min"], latency["max"]],
            "train_step_ms": steps[len(models)]["median"] if steps[len(models)] else None,
            "peak_mem_mb": peak["forward"] if peak else None,
            "train_peak_mem_mb": peak["train"] if peak else None,
            "layers": _layers(report, times),
        })
    return {
        **provenance,
        **({} if host is YOLOV5 else {"host": host.name, "ultralytics": _ultralytics_version()}),
        "imgsz": [h, w],
        "batch": batch,
        "device": device_description(dev),
        "threads": torch.get_num_threads(),
        "runs": runs,
        "warmup": warmup,
        "load_average": load,
        "torch": torch.__version__,
        "models": models,
    }


def _ultralytics_version() -> str:
    from yolov5_dattn.hosts.ultralytics.registry import ultralytics_version
    return ultralytics_version()


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One training step's compute: forward in train mode and the backward of a loss over every output (the
    detection loss itself costs little next to the network; the optimizer step is the same for both models)."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    outputs = out if isinstance(out, (list, tuple)) else [out]
    flat = [t for o in outputs for t in (o if isinstance(o, (list, tuple)) else [o]) if torch.is_tensor(t)]
    sum(t.float().mean() for t in flat).backward()


# ---- the table -----------------------------------------------------------------------------------
def _delta(value, base, digits=2, pct=True) -> str:
    if value is None or base is None:
        return ""
    d = value - base
    text = f"{d:+,.{digits}f}" if digits else f"{d:+,d}"
    return f"{text} ({d / base:+.1%})" if pct and base else text


def _num(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _g(value: float) -> str:
    """GFLOPs with enough decimals for small models: 109.59, 0.183, 0.0023."""
    return f"{value:.{2 if abs(value) >= 1 else 3 if abs(value) >= 0.1 else 4}f}"


def _ratio(m: dict, base: Optional[dict], key: str) -> str:
    """'2.31x': m[key] / base[key], or '' without a baseline or a value."""
    if not base or not m.get(key) or not base.get(key):
        return ""
    return f"{m[key] / base[key]:.2f}x"


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:.{0 if value >= 100 else 1}f}"


def format_table(result: dict) -> str:
    """The comparison as text: one row per model, deltas against its baseline, then its DAttention layers."""
    h, w = result["imgsz"]
    by_name = {m["name"]: m for m in result["models"]}
    load = result.get("load_average")
    ultralytics = result.get("host") == "ultralytics"
    lines = [f"imgsz {h}x{w}, batch {result['batch']}, {result['device']}"
             + (f" (load average {load:.1f} while timing)" if load is not None else ""),
             f"commit {result.get('commit', 'unknown')}, {result.get('date', 'date unknown')}, "
             f"torch {result.get('torch', '?')}" + (f", ultralytics {result.get('ultralytics', '?')}" if ultralytics
                                                     else ""),
             f"latency = median of {result['runs']} forwards after {result['warmup']} warm-up, models in turns; "
             f"memory = peak growth (forward: eval, no grad; train: forward + backward)", ""]
    steps = any(m.get("train_step_ms") for m in result["models"])
    header = (f"{'model':<24}{'params':>12}{'Δ params':>20}{'GFLOPs':>9}{'GFLOPs':>9}{'Δ GFLOPs (full)':>20}"
              f"{'latency':>10}{'Δ latency':>11}{'fwd mem':>9}{'train mem':>11}"
              + (f"{'train step':>12}{'× base':>8}" if steps else ""))
    thop_unit = "thop" if ultralytics else "YOLOv5"
    units = (f"{'':<24}{'':>12}{'':>20}{thop_unit:>9}{'full':>9}{'':>20}{'ms':>10}{'':>11}{'MB':>9}{'MB':>11}"
             + (f"{'ms':>12}{'':>8}" if steps else ""))
    lines += [header, units, "-" * len(header)]
    for m in result["models"]:
        base = by_name.get(m["baseline"]) if m["baseline"] else None
        lat_delta = f"{m['latency_ms'] / base['latency_ms'] - 1:+.0%}" if base else ""
        gflops_delta = f"{m['gflops'] - base['gflops']:+.{len(_g(base['gflops']).split('.')[1])}f} " \
                       f"({m['gflops'] / base['gflops'] - 1:+.1%})" if base else ""
        lines.append(
            f"{m['name']:<24}{m['params']:>12,}{_delta(m['params'], base and base['params'], 0):>20}"
            f"{_g(m['gflops_thop']):>9}{_g(m['gflops']):>9}{gflops_delta:>20}"
            f"{m['latency_ms']:>10.1f}{lat_delta:>11}{_mb(m['peak_mem_mb']):>9}{_mb(m['train_peak_mem_mb']):>11}"
            + (f"{_num(m.get('train_step_ms'), '.1f'):>12}{_ratio(m, base, 'train_step_ms'):>8}" if steps else ""))
    thop = ("GFLOPs thop = thop at the real imgsz, unfused (blind to matmul and attention ops; ultralytics' model "
            "summary, with yolov5_dattn installed, adds what thop misses)" if ultralytics else
            "GFLOPs YOLOv5 = thop at the real imgsz, unfused (YOLOv5's convention; blind to matmul and attention ops)")
    lines += ["", f"{thop}; GFLOPs full = torch FlopCounterMode (conv, matmul, attention kernels; elementwise ops "
                  f"count 0)."]
    for m in result["models"]:
        if not m["layers"]:
            continue
        lines += ["", f"{m['name']}: thop misses {_g(m['gflops_thop_missed'])} GFLOPs; DAttention layers:",
                  f"  {'module':<28}{'GFLOPs':>9}{'QKᵀ+AV':>9}{'of FLOPs':>10}{'ms':>9}{'of time':>9}"]
        for layer in m["layers"]:
            share_t = "n/a" if layer["time_share"] is None else f"{layer['time_share']:.1%}"
            lines.append(f"  {layer['name']:<28}{_g(layer['gflops']):>9}{_g(layer['gflops_attention_matmuls']):>9}"
                         f"{layer['flops_share']:>10.1%}{_num(layer['time_ms'], '.1f'):>9}{share_t:>9}")
    return "\n".join(lines)
