"""Does the attention help? Train each model and its stock YOLOv5 baseline under identical settings, then
tabulate accuracy against cost.

An ablation is a *plan* (`make_plan`: which configs, seeds, flags; saved as `plan.json` in its folder
`runs/ablate/exp…`) and one training per (config, seed), each run by `yolov5-dattn train` in its own
Python (`python -m yolov5_dattn train ...`: the wrapper's checks apply, and runs cannot leak state into
each other). Every run gets the same --data, --imgsz, --epochs, --seed and pass-through train flags;
only --cfg (and, for transfer rows, --weights) differ. A finished run leaves `status/<key>.json`, so an
interrupted ablation continues where it stopped (the unfinished run starts again from scratch), and a
failed run is recorded as failed instead of stopping the ablation.

Layout of an ablation folder:
    plan.json            the plan (what re-running the same command compares against)
    cost.json            params, full GFLOPs and latency of each config (measured once)
    runs/<key>/          YOLOv5's run folder (weights/, results.csv, ...)
    logs/<key>.log       the run's output
    status/<key>.json    {"status": "done" | "failed" | "skipped", "seconds", "returncode", "error", "metrics"}
    results.md / results.json / results.png   the table (rewritten after every run)

The table pairs each model with its stock baseline seed by seed (same seed, same data order) and says whether
the difference is beyond seed noise: the rule is in `significance.py`.
"""
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from yolov5_dattn.errors import UserError

from .significance import STRONG_SEEDS, paired_difference, verdict_line

__all__ = ("RunSpec", "run_label", "make_plan", "plan_runs", "write_json", "read_json", "ablation_folders",
           "is_complete", "comparable", "choose_folder", "next_free", "package_path", "train_command",
           "read_metrics", "last_error", "nms_time_limit_hits", "execute_run", "measure_cost", "summarise",
           "paired_rows", "format_markdown", "plot_summary", "write_results", "weak_seeds_warning")

PLAN_VERSION = 1
TRAIN_COMMAND = {"train": ["train"], "segment-train": ["segment", "train"]}


@dataclass
class RunSpec:
    """One training of the ablation."""
    key: str  # unique folder name: '<label>-seed<seed>'
    label: str  # the table row: config stem, or '<stem> <- <baseline stem>' for a transfer
    cfg: str  # model YAML (absolute path)
    seed: int
    role: str  # 'baseline' (the stock YOLOv5 model) or 'model'
    start: str  # 'scratch', 'weights' (the user's --weights) or 'transfer' (the same-seed baseline run)
    epochs: int
    source: Optional[str] = None  # transfer: key of the run whose last.pt is --weights


def run_label(cfg: Path, start: str, baseline: Optional[Path] = None) -> str:
    """The row label of a config: its file stem, '<stem> <- <baseline stem>' when started from the baseline run."""
    return f"{cfg.stem} <- {baseline.stem}" if start == "transfer" and baseline is not None else cfg.stem


def make_plan(task: str, data: str, cfgs: Sequence[Path], baselines: Sequence[Path], imgsz: int, epochs: int,
              seeds: Sequence[int], train_args: Sequence[str], weights: Optional[str] = None,
              transfer: bool = False, transfer_epochs: Optional[int] = None, threads: Optional[int] = None,
              cwd: Optional[str] = None) -> dict:
    """The ablation's plan: settings plus the ordered runs (baselines first, then each config, then transfers).

    Args:
        task: 'train' or 'segment-train'; data: data YAML; cfgs: model YAMLs; baselines: their stock YOLOv5
        YAMLs (one per cfg, duplicates allowed); imgsz, epochs; seeds; train_args: flags passed to every run;
        weights: a checkpoint every run starts from (None: from scratch); transfer: also train each config
        from its same-seed baseline run's last.pt, for `transfer_epochs` (default `epochs`);
        threads: OMP_NUM_THREADS of the runs; cwd: the folder the runs start in.
    Returns: a JSON-ready dict (`runs` is a list of `RunSpec` dicts).
    """
    start = "weights" if weights else "scratch"
    base_of = {str(c): b for c, b in zip(cfgs, baselines)}
    unique_baselines = list(dict.fromkeys(str(b) for b in baselines))
    unique_cfgs = [c for c in dict.fromkeys(str(c) for c in cfgs) if c not in unique_baselines]
    runs: List[RunSpec] = []
    for seed in seeds:
        for b in unique_baselines:
            label = run_label(Path(b), start)
            runs.append(RunSpec(f"{label}-seed{seed}", label, b, seed, "baseline", start, epochs))
        for c in unique_cfgs:
            label = run_label(Path(c), start)
            runs.append(RunSpec(f"{label}-seed{seed}", label, c, seed, "model", start, epochs))
        if transfer:
            for c in unique_cfgs:
                b = Path(base_of[c])
                label = run_label(Path(c), "transfer", b)
                runs.append(RunSpec(f"{Path(c).stem}-from-{b.stem}-seed{seed}", label, c, seed, "model",
                                    "transfer", transfer_epochs or epochs,
                                    source=f"{run_label(b, start)}-seed{seed}"))
    return {"version": PLAN_VERSION, "task": task, "data": str(data), "imgsz": int(imgsz), "epochs": int(epochs),
            "seeds": [int(s) for s in seeds], "cfgs": [str(c) for c in cfgs],
            "baselines": [str(b) for b in baselines], "train_args": [str(a) for a in train_args],
            "weights": weights or None, "transfer": bool(transfer),
            "transfer_epochs": (transfer_epochs or epochs) if transfer else None, "threads": threads,
            "cwd": cwd or os.getcwd(), "runs": [asdict(r) for r in runs]}


def plan_runs(plan: dict) -> List[RunSpec]:
    """The plan's runs as `RunSpec`s, in order."""
    return [RunSpec(**r) for r in plan["runs"]]


def write_json(path: Path, data) -> None:
    """Write `data` as JSON to `path` atomically (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---- finding / creating the folder ---------------------------------------------------------------
def ablation_folders(project: Path, name: str) -> List[Path]:
    """`project/name`, `project/name2`, ... that hold a plan, oldest first (by their number)."""
    found = []
    for p in Path(project).glob(f"{name}*"):
        suffix = p.name[len(name):]
        if p.is_dir() and (suffix == "" or suffix.isdigit()) and (p / "plan.json").is_file():
            found.append((int(suffix or 1), p))
    return [p for _, p in sorted(found)]


def is_complete(folder: Path, plan: dict) -> bool:
    """True when every run of the plan has a status file (done, failed or skipped)."""
    return all((folder / "status" / f"{r['key']}.json").is_file() for r in plan["runs"])


def comparable(plan: dict) -> dict:
    """The part of a plan that must match for a re-run of the same command to continue it."""
    return {k: v for k, v in plan.items() if k != "cwd"}


def choose_folder(project: Path, name: str, plan: Optional[dict], resume, exist_ok: bool = False):
    """(folder, plan, continuing) for this invocation.

    `resume` None: continue the latest folder whose plan equals `plan` if it is unfinished, else a new folder
    (exp, exp2, ... as YOLOv5's increment_path). `resume` True: the latest folder with a plan; a path: that
    folder (its own plan is used). Raises UserError when there is nothing to resume.
    """
    if resume:
        folder = ablation_folders(project, name)[-1:] if resume is True else [Path(resume)]
        if not folder:
            raise UserError(f"--resume: no ablation under {project}/{name}*: start one with --data and --cfg")
        folder = folder[0]
        saved = read_json(folder / "plan.json")
        if saved is None or saved.get("version") != PLAN_VERSION:
            raise UserError(f"--resume {folder}: no readable plan.json there: pass the folder of an ablation "
                            f"(runs/ablate/exp...)")
        return folder, saved, True
    latest = ablation_folders(project, name)[-1:]
    if latest and not exist_ok:
        saved = read_json(latest[0] / "plan.json")
        if saved is not None and comparable(saved) == comparable(plan) and not is_complete(latest[0], saved):
            return latest[0], saved, True
    if exist_ok:
        folder = Path(project) / name
        saved = read_json(folder / "plan.json")
        if saved is not None and comparable(saved) == comparable(plan):
            return folder, saved, True
        return folder, plan, False
    return next_free(Path(project) / name), plan, False


def next_free(path: Path) -> Path:
    """`path` if free, else path2, path3, ... (YOLOv5's increment_path convention for run folders)."""
    if not path.exists():
        return path
    return next(p for p in (Path(f"{path}{n}") for n in range(2, 10 ** 6)) if not p.exists())


# ---- one run -------------------------------------------------------------------------------------
def package_path() -> str:
    """The folder holding the `yolov5_dattn` package, so a child Python imports this very copy."""
    return str(Path(__file__).resolve().parents[2])


def train_command(plan: dict, run: RunSpec, folder: Path) -> List[str]:
    """The `python -m yolov5_dattn train ...` command line of `run` (absolute paths)."""
    command = [sys.executable, "-m", "yolov5_dattn", *TRAIN_COMMAND[plan["task"]],
               "--cfg", run.cfg, "--data", plan["data"], "--imgsz", str(plan["imgsz"]),
               "--epochs", str(run.epochs), "--seed", str(run.seed),
               "--project", str(folder / "runs"), "--name", run.key, "--exist-ok", *plan["train_args"]]
    if run.start == "transfer":
        command += ["--weights", str(folder / "runs" / run.source / "weights" / "last.pt")]
    elif run.start == "weights":
        command += ["--weights", plan["weights"]]
    return command


def _float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_metrics(results_csv: Path, task: str, validated_every_epoch: bool = True) -> Optional[dict]:
    """mAPs from YOLOv5's `results.csv`: the final epoch's, the first epoch's, the best (YOLOv5's fitness
    0.1·mAP50 + 0.9·mAP50-95) and mAP50 per epoch. Segmentation: box (B) and mask (M) mAPs; the headline
    `map50`/`map` are the masks'. `validated_every_epoch` False (--noval): only the last epoch was validated,
    so no first-epoch figure. Returns None when the file has no data row."""
    try:
        with open(results_csv, newline="") as f:
            rows = [{k.strip(): v.strip() for k, v in row.items() if k} for row in csv.DictReader(f)]
    except OSError:
        return None
    if not rows:
        return None
    if task == "segment-train":
        keys = {"map50": "metrics/mAP_0.5(M)", "map": "metrics/mAP_0.5:0.95(M)",
                "box_map50": "metrics/mAP_0.5(B)", "box_map": "metrics/mAP_0.5:0.95(B)"}
    else:
        keys = {"map50": "metrics/mAP_0.5", "map": "metrics/mAP_0.5:0.95"}

    def pick(row):
        return {name: _float(row.get(col)) for name, col in keys.items()}

    fitness = [0.1 * (_float(r.get(keys["map50"])) or 0) + 0.9 * (_float(r.get(keys["map"])) or 0) for r in rows]
    best = max(range(len(rows)), key=lambda i: fitness[i])
    first = pick(rows[0]) if validated_every_epoch or len(rows) == 1 else {k: None for k in keys}
    return {"epochs_run": len(rows), "final": pick(rows[-1]), "epoch1": first,
            "best": {**pick(rows[best]), "epoch": best + 1},
            "map50_per_epoch": [_float(r.get(keys["map50"])) for r in rows]}


def last_error(log: Path) -> str:
    """The run's `error: ...` line, else its last non-empty line (for the table of failures)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1][:300]


NMS_WARNING = "NMS time limit"  # YOLOv5's non_max_suppression gives up on a batch after 0.5 + 0.05·batch s


def nms_time_limit_hits(log: Path) -> int:
    """How often the run's validations hit YOLOv5's NMS time limit (each hit drops the rest of a batch's
    boxes, so the mAP of that validation is too low: on a busy CPU the figure depends on the load)."""
    try:
        return log.read_text(errors="replace").count(NMS_WARNING)
    except OSError:
        return 0


def execute_run(plan: dict, run: RunSpec, folder: Path, echo: Callable[[str], None] = print,
                stream: bool = False) -> dict:
    """Train `run` in a fresh Python; returns (and writes to status/<key>.json) its status.

    A leftover folder of an interrupted attempt is removed first (YOLOv5 appends to results.csv). The
    output goes to logs/<key>.log (also to this process's stdout when `stream`).
    """
    import shutil
    run_dir, log = folder / "runs" / run.key, folder / "logs" / f"{run.key}.log"
    status_file = folder / "status" / f"{run.key}.json"
    if run.start == "transfer":
        source = read_json(folder / "status" / f"{run.source}.json") or {}
        weights = folder / "runs" / run.source / "weights" / "last.pt"
        if source.get("status") != "done" or not weights.is_file():
            status = {"status": "skipped", "error": f"its source run {run.source} did not finish", "seconds": 0.0,
                      "returncode": None, "metrics": None}
            write_json(status_file, status)
            return status
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_path(), os.environ.get("PYTHONPATH")]))}
    if plan.get("threads"):
        env["OMP_NUM_THREADS"] = str(plan["threads"])
    command = train_command(plan, run, folder)
    start = time.time()
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=plan["cwd"], bufsize=1, errors="replace")
        try:
            for line in proc.stdout:
                out.write(line)
                if stream:
                    sys.stdout.write(line)
            proc.wait()
        except BaseException:  # Ctrl-C: stop the child too; no status, so the run is redone next time
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    seconds = time.time() - start
    noval = "--noval" in plan["train_args"]
    metrics = read_metrics(run_dir / "results.csv", plan["task"], validated_every_epoch=not noval)
    if proc.returncode == 0 and metrics is not None:
        status = {"status": "done", "returncode": 0, "seconds": seconds, "error": None, "metrics": metrics}
    else:
        error = last_error(log) if proc.returncode else "training wrote no results.csv"
        status = {"status": "failed", "returncode": proc.returncode, "seconds": seconds, "error": error,
                  "metrics": metrics}
    write_json(status_file, status)
    return status


# ---- cost ----------------------------------------------------------------------------------------
def measure_cost(cfgs: Sequence[str], nc: Optional[int], imgsz: int, runs: int = 10, warmup: int = 2) -> Dict[str, dict]:
    """{cfg: {"params", "gflops" (full count, attention included), "latency_ms" (median, batch 1, CPU)}}.

    Latency: eval forwards of all models in turns (`median_latency_ms`) on an imgsz×imgsz input.
    """
    import torch

    from .flops import count_flops
    from .profiling import build_model, median_latency_ms
    models = {c: build_model(c, nc).eval() for c in cfgs}
    x = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        latencies = median_latency_ms([lambda m=m: m(x) for m in models.values()], torch.device("cpu"),
                                      warmup=warmup, runs=runs)
    return {c: {"params": sum(p.numel() for p in m.parameters()), "gflops": count_flops(m, imgsz).total / 1e9,
                "latency_ms": lat["median"], "latency_range_ms": [lat["min"], lat["max"]]}
            for (c, m), lat in zip(models.items(), latencies)}


# ---- the table -----------------------------------------------------------------------------------
def _stats(values: Sequence[Optional[float]]) -> Optional[dict]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


def summarise(plan: dict, statuses: Dict[str, Optional[dict]], cost: Dict[str, dict]) -> dict:
    """One row per label (config × start), aggregated over seeds; the JSON of results.json."""
    rows: Dict[str, dict] = {}
    for run in plan_runs(plan):
        row = rows.setdefault(run.label, {"label": run.label, "cfg": run.cfg, "role": run.role, "start": run.start,
                                          "epochs": run.epochs, "runs": []})
        status = statuses.get(run.key)
        row["runs"].append({"key": run.key, "seed": run.seed, **(status or {"status": "pending"})})
    out = []
    for row in rows.values():
        done = [r for r in row["runs"] if r["status"] == "done"]

        def metric(part, name):
            return _stats([(r["metrics"] or {}).get(part, {}).get(name) for r in done])

        c = cost.get(row["cfg"], {})
        row.update({
            "seeds_done": len(done), "seeds_planned": len(row["runs"]),
            "map50": metric("final", "map50"), "map": metric("final", "map"),
            "epoch1_map50": metric("epoch1", "map50"),
            "box_map50": metric("final", "box_map50") if plan["task"] == "segment-train" else None,
            "train_seconds": _stats([r["seconds"] for r in done]),
            "params": c.get("params"), "gflops": c.get("gflops"), "latency_ms": c.get("latency_ms"),
        })
        out.append(row)
    paired_rows(plan, out)
    return {"task": plan["task"], "data": plan["data"], "imgsz": plan["imgsz"], "epochs": plan["epochs"],
            "seeds": plan["seeds"], "train_args": plan["train_args"], "rows": out}


PAIRED_METRICS = {"map50": "mAP50", "map": "mAP50-95"}


def _final_by_seed(row: dict, name: str) -> Dict[int, Optional[float]]:
    return {r["seed"]: ((r.get("metrics") or {}).get("final") or {}).get(name) if r["status"] == "done" else None
            for r in row["runs"]}


def paired_rows(plan: dict, rows: List[dict]) -> None:
    """Add to each model row `paired`: its paired comparison with its stock baseline row, per metric
    (`significance.paired_difference`: per-seed differences, mean, sample std, t-test verdict) and the
    one-line verdict; baseline rows get None."""
    base_of = dict(zip(plan["cfgs"], plan["baselines"]))
    by_label = {row["label"]: row for row in rows}
    for row in rows:
        row["paired"] = None
        if row["role"] != "model" or row["cfg"] not in base_of:
            continue
        base = by_label.get(run_label(Path(base_of[row["cfg"]]), "scratch"))
        if base is None or base["role"] != "baseline":
            continue
        metrics = {k: paired_difference(_final_by_seed(row, k), _final_by_seed(base, k)) for k in PAIRED_METRICS}
        row["paired"] = {"baseline": base["label"], **metrics,
                         "verdict": verdict_line(row["label"], base["label"], metrics, PAIRED_METRICS)}


def weak_seeds_warning(seeds: Sequence[int]) -> Optional[str]:
    """The warning line for an ablation with fewer than STRONG_SEEDS seeds (None from STRONG_SEEDS on)."""
    if len(seeds) >= STRONG_SEEDS:
        return None
    return (f"warning: {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({' '.join(map(str, seeds))}): the "
            f"better/worse verdicts are weak (a single run swings by more than most differences between models): "
            f"use --seeds with {STRONG_SEEDS} or more seeds, e.g. --seeds {' '.join(map(str, range(STRONG_SEEDS)))}")


def _fmt_per_seed(p: dict) -> str:
    return ", ".join(f"s{s} {d:+.3f}" for s, d in zip(p["seeds"], p["diffs"])) or "n/a"


def _fmt_paired(p: dict) -> str:
    if p["mean"] is None:
        return "n/a"
    return f"{p['mean']:+.3f}" if p["std"] is None else f"{p['mean']:+.3f} ± {p['std']:.3f}"


def _paired_markdown(summary: dict) -> List[str]:
    """The paired-difference table and the verdict lines (empty without a model row)."""
    rows = [row for row in summary["rows"] if row.get("paired")]
    if not rows:
        return []
    seg = "mask " if summary["task"] == "segment-train" else ""
    lines = ["", f"Paired difference against stock (model − stock, same seed and data order; mean ± sample standard "
                 f"deviation over the seeds where both runs finished):", "",
             f"| model | vs | seeds paired | Δ {seg}mAP50 per seed | Δ {seg}mAP50 | Δ {seg}mAP50-95 per seed | "
             f"Δ {seg}mAP50-95 |", "|---|---|---:|---|---:|---|---:|"]
    for row in rows:
        p = row["paired"]
        lines.append(f"| {row['label']} | {p['baseline']} | {p['map50']['n']}/{row['seeds_planned']} | "
                     f"{_fmt_per_seed(p['map50'])} | {_fmt_paired(p['map50'])} | {_fmt_per_seed(p['map'])} | "
                     f"{_fmt_paired(p['map'])} |")
    lines += ["", f"Verdict: two-sided paired t-test at 95 % over the seeds (\"better\"/\"worse\": 0 lies outside the "
                  f"95 % confidence interval of the mean difference; \"within noise\": the difference cannot be told "
                  f"apart from seed-to-seed noise; weak: fewer than {STRONG_SEEDS} paired seeds):", ""]
    lines += [f"- {row['paired']['verdict']}" for row in rows]
    if any(row["start"] == "transfer" for row in rows):
        lines += ["", "Rows `<- stock` are compared with the stock run they started from: their difference includes "
                      "the extra epochs they trained."]
    return lines


def _fmt_stat(s: Optional[dict], digits: int = 3) -> str:
    if s is None:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _fmt_time(s: Optional[dict]) -> str:
    return "n/a" if s is None else f"{s['mean'] / 60:.1f} min"


def format_markdown(summary: dict, header: str = "") -> str:
    """results.md: the table (mean ± sample standard deviation over seeds; per-seed values in results.json),
    then every failed or skipped run with the line that says why."""
    seg = summary["task"] == "segment-train"
    what = "mask " if seg else ""
    lines = [header] if header else []
    lines += [f"| model | start | seeds ok | {what}mAP50 | {what}mAP50-95 | epoch-1 {what}mAP50 | params | "
              f"GFLOPs (full) | latency ms | train time |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary["rows"]:
        start = {"scratch": "scratch", "weights": "--weights", "transfer": "stock run's last.pt"}[row["start"]]
        params = "n/a" if row["params"] is None else f"{row['params']:,}"
        gflops = "n/a" if row["gflops"] is None else f"{row['gflops']:.3f}"
        latency = "n/a" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}"
        lines.append(f"| {row['label']} | {start}, {row['epochs']} ep | {row['seeds_done']}/{row['seeds_planned']} | "
                     f"{_fmt_stat(row['map50'])} | {_fmt_stat(row['map'])} | {_fmt_stat(row['epoch1_map50'])} | "
                     f"{params} | {gflops} | {latency} | {_fmt_time(row['train_seconds'])} |")
    lines += ["", "mean ± sample standard deviation over the seeds that finished; mAP at the final epoch; "
                  "GFLOPs: full count at the run's imgsz (attention matmuls included); latency: median CPU "
                  "forward, batch 1."]
    lines += _paired_markdown(summary)
    cut = [(row["label"], r) for row in summary["rows"] for r in row["runs"] if r.get("nms_time_limit")]
    if cut:
        lines += ["", "Validations cut short by YOLOv5's NMS time limit (their mAP is too low and depends on the "
                      "machine's load):", ""]
        lines += [f"- {label}, seed {r['seed']}: {r['nms_time_limit']} time-limit warnings" for label, r in cut]
    problems = [(row["label"], r) for row in summary["rows"] for r in row["runs"]
                if r["status"] not in ("done",)]
    if problems:
        lines += ["", "Runs without a result:", ""]
        for label, r in problems:
            why = r.get("error") or ""
            rc = f" (exit {r['returncode']})" if r.get("returncode") not in (None, 0) else ""
            lines.append(f"- {label}, seed {r['seed']}: {r['status']}{rc}{': ' + why if why else ''}")
    return "\n".join(lines) + "\n"


def plot_summary(summary: dict, path: Path) -> Path:
    """results.png: mAP50 and mAP50-95 per row (bar = mean, dots = seeds). Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(rows) + 4), 4.4), constrained_layout=True)
    for ax, key, title in ((axes[0], "map50", "mAP50"), (axes[1], "map", "mAP50-95")):
        for i, row in enumerate(rows):
            s = row[key]
            color = "#4C72B0" if row["role"] == "baseline" else ("#55A868" if row["start"] == "transfer"
                                                                   else "#DD8452")
            if s is None:
                ax.text(i, 0.01, "no result", rotation=90, ha="center", va="bottom", fontsize=8)
                continue
            ax.bar(i, s["mean"], color=color, alpha=0.8)
            ax.plot([i] * len(s["values"]), s["values"], "k.", markersize=6)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["label"].replace(" <- ", "\n<- ") for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title} (final epoch; dots: seeds)")
        ax.set_ylim(0, 1)
    fig.suptitle(f"{Path(summary['data']).name}, imgsz {summary['imgsz']}, {summary['epochs']} epochs, "
                 f"seeds {', '.join(map(str, summary['seeds']))}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_results(folder: Path, plan: dict, cost: Dict[str, dict], plot: bool = True) -> dict:
    """Rewrite results.json / results.md (/ results.png) from the status files; returns the summary."""
    statuses = {r["key"]: read_json(folder / "status" / f"{r['key']}.json") for r in plan["runs"]}
    for key, status in statuses.items():
        if status is not None:
            status["nms_time_limit"] = nms_time_limit_hits(folder / "logs" / f"{key}.log")
    summary = summarise(plan, statuses, cost)
    write_json(folder / "results.json", summary)
    md = folder / "results.md"
    tmp = md.with_name(f".{md.name}.{os.getpid()}.part")
    tmp.write_text(format_markdown(summary))
    os.replace(tmp, md)
    if plot:
        plot_summary(summary, folder / "results.png")
    return summary
