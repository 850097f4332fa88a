"""The comparison as one PNG: GFLOPs (convolution vs attention), latency and peak memory, model by model."""
import os
from pathlib import Path

CONV, ATTN, FWD, TRAIN = "#4C72B0", "#DD8452", "#55A868", "#8172B3"


def timing_is_noisy(result: dict) -> bool:
    """True when the machine was busy while timing: load average above 1.5 × the measuring threads.

    The measurement itself keeps `threads` cores busy; a load well above that means other jobs shared the cores
    and the latencies say more about them than about the models.
    """
    load, threads = result.get("load_average"), result.get("threads")
    return load is not None and bool(threads) and load > 1.5 * threads


def footer(result: dict) -> str:
    """The plot's provenance line: 'commit abc1234, 2026-12-02T00:30:00+00:00, torch 2.14.1, 2 threads'
    (', ultralytics 8.4.190' after torch for a comparison of ultralytics models)."""
    parts = [f"commit {result.get('commit', 'unknown')}", result.get("date", "date unknown")]
    if result.get("torch"):
        parts.append(f"torch {result['torch']}")
    if result.get("ultralytics"):
        parts.append(f"ultralytics {result['ultralytics']}")
    if result.get("threads"):
        parts.append(f"{result['threads']} threads")
    return ", ".join(parts)


def plot_comparison(result: dict, path: Path) -> Path:
    """Write a three-panel bar chart of `comparison.compare()`'s result to `path` (PNG). Returns the path.

    Panel 1 stacks each model's full GFLOPs into convolution (everything outside DAttention) and attention
    (inside DAttention modules); panel 2 is the median latency (baselines blue, attention models orange);
    panel 3 the forward and training-step peaks. A footer names the commit, date and torch (`footer`).
    The file appears only once complete.
    """
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    models = result["models"]
    names = [m["name"] for m in models]
    x = range(len(models))
    fig, axes = plt.subplots(1, 3, figsize=(max(10.0, 2.2 * len(models) + 4), 4.6), constrained_layout=True)

    ax = axes[0]
    attn = [m["gflops_attention"] for m in models]
    conv = [m["gflops"] - a for m, a in zip(models, attn)]
    ax.bar(x, conv, color=CONV, label="convolution")
    ax.bar(x, attn, bottom=conv, color=ATTN, label="attention (DAttention)")
    for i, m in enumerate(models):
        ax.annotate(f"{m['gflops']:.1f}", (i, m["gflops"]), ha="center", va="bottom", fontsize=8)
    ax.set_title("GFLOPs (full count)")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.bar(x, [m["latency_ms"] for m in models], color=[ATTN if m.get("baseline") else CONV for m in models])
    for i, m in enumerate(models):
        ax.annotate(f"{m['latency_ms']:.0f}", (i, m["latency_ms"]), ha="center", va="bottom", fontsize=8)
    ax.set_title(f"latency, ms (median of {result['runs']})")
    if timing_is_noisy(result):  # say it on the panel itself: the figure travels without its JSON
        ax.set_title(f"latency, ms (median of {result['runs']})\nNOT COMPARABLE: timed under load "
                     f"{result['load_average']:.1f} on {result['threads']} threads", color="#C44E52")

    ax = axes[2]
    width = 0.4
    fwd = [m["peak_mem_mb"] or 0 for m in models]
    train = [m["train_peak_mem_mb"] or 0 for m in models]
    ax.bar([i - width / 2 for i in x], fwd, width, color=FWD, label="forward")
    ax.bar([i + width / 2 for i in x], train, width, color=TRAIN, label="training step")
    ax.set_title("peak memory, MB" + ("" if any(fwd) else " (not measured)"))
    ax.legend(fontsize=8)

    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    h, w = result["imgsz"]
    load = result.get("load_average")
    fig.suptitle(f"imgsz {h}x{w}, batch {result['batch']} — {result['device']}"
                 + (f", load average {load:.1f}" if load is not None else ""), fontsize=10)
    fig.supxlabel(footer(result), fontsize=7, color="0.35")  # constrained_layout keeps room for it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
