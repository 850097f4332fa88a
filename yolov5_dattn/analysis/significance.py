"""Is a model better than stock, or is the difference seed noise? A paired comparison over seeds.

Each seed trains both models on the same data in the same order, so the seed-to-seed swing common to both
cancels in the per-seed difference d_i = model_i − stock_i. The verdict is a two-sided paired t-test at 95 %
on those differences (equivalently: is 0 outside the 95 % confidence interval of their mean?):

    t = mean(d) / (std(d) / √n)          std: sample standard deviation (n − 1)
    "better"        t >  t_crit(0.975, n − 1)
    "worse"         t < −t_crit(0.975, n − 1)
    "within noise"  otherwise

With 3 seeds t_crit is 4.30, so the mean difference must exceed 2.48 × its spread. Edge cases:
- 1 seed: there is no spread to test against, so the verdict is "within noise".
- every difference equal (std 0): "within noise" when they are 0; when they are not, no seed disagrees and t
  is infinite, so "better" or "worse".
- a seed where either run did not finish is left out of the pairs (and named).
Fewer than `STRONG_SEEDS` pairs make a *weak* verdict: the test has little power, so "within noise" there says
little about whether the models differ.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence

__all__ = ("BETTER", "WORSE", "NOISE", "STRONG_SEEDS", "CONFIDENCE", "t_critical", "paired_difference",
           "verdict_line")

BETTER, WORSE, NOISE = "better", "worse", "within noise"
STRONG_SEEDS = 3  # below this many paired seeds a verdict is marked weak
CONFIDENCE = 0.95
DECIMALS = 6  # results.csv holds 5 decimals: rounding the differences here removes float noise (0.8-0.5 vs 0.9-0.6)


def t_critical(dof: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided critical value of Student's t with `dof` degrees of freedom (4.303 for dof 2 at 95 %)."""
    from scipy.stats import t  # scipy comes with yolov5 (a dependency of this package)
    return float(t.ppf(0.5 + confidence / 2, dof))


def paired_difference(model: Dict[int, Optional[float]], stock: Dict[int, Optional[float]],
                      confidence: float = CONFIDENCE) -> dict:
    """The paired comparison of one metric, model − stock, over the seeds both finished.

    Args:
        model, stock: {seed: metric of that seed's run, None when the run has no result}.
    Returns: {"seeds": paired seeds (sorted), "diffs": model − stock per paired seed, "n", "mean", "std" (sample;
        None below 2 pairs), "t" (None when undefined), "t_crit", "ci" ([low, high] of the mean at `confidence`,
        None below 2 pairs), "verdict" (BETTER / WORSE / NOISE; None without a pair), "weak" (n < STRONG_SEEDS),
        "missing": seeds planned for either side that have no pair}.
    """
    seeds = sorted(set(model) | set(stock))
    paired = [s for s in seeds if model.get(s) is not None and stock.get(s) is not None]
    diffs = [round(model[s] - stock[s], DECIMALS) for s in paired]
    n = len(diffs)
    out = {"seeds": paired, "diffs": diffs, "n": n, "mean": None, "std": None, "t": None, "t_crit": None,
           "ci": None, "verdict": None, "weak": n < STRONG_SEEDS, "missing": [s for s in seeds if s not in paired]}
    if n == 0:
        return out
    mean = round(statistics.fmean(diffs), DECIMALS + 2)
    out.update(mean=mean, verdict=NOISE)
    if n == 1:
        return out
    std = statistics.stdev(diffs)
    crit = t_critical(n - 1, confidence)
    half = crit * std / math.sqrt(n)
    out.update(std=std, t_crit=crit, ci=[mean - half, mean + half])
    if std > 0:
        out["t"] = mean / (std / math.sqrt(n))
    elif mean != 0:
        out["t"] = math.copysign(math.inf, mean)
    if out["t"] is not None and abs(out["t"]) > crit:
        out["verdict"] = BETTER if out["t"] > 0 else WORSE
    return out


def _fmt_diff(p: dict) -> str:
    """'+0.012 ± 0.034' (mean ± sample std of the differences), '+0.012' for one pair."""
    return f"{p['mean']:+.3f}" if p["std"] is None else f"{p['mean']:+.3f} ± {p['std']:.3f}"


def verdict_line(label: str, baseline: str, metrics: Dict[str, dict], names: Dict[str, str]) -> str:
    """One line per model: the verdict of each metric against the baseline, with its numbers.

    Args:
        label, baseline: row labels; metrics: {key: paired_difference(...)}; names: {key: 'mAP50', ...}.
    Returns: e.g. 'yolov5n_x vs yolov5n over 3 seeds: mAP50 within noise (+0.012 ± 0.034, |t| 0.61 < 4.30);
        mAP50-95 better (+0.030 ± 0.004, t 13.0 > 4.30)'.
    """
    parts, ns = [], set()
    for key, p in metrics.items():
        ns.add(p["n"])
        name = names.get(key, key)
        if p["verdict"] is None:
            parts.append(f"{name} no verdict (no seed where both runs finished)")
            continue
        if p["n"] == 1:
            why = "one seed: no spread to test against"
        elif p["t"] is None:
            why = "no seed differs"
        else:
            t = "inf" if math.isinf(p["t"]) else f"{abs(p['t']):.2f}"
            why = f"|t| {t} {'>' if p['verdict'] != NOISE else '≤'} {p['t_crit']:.2f}"
        parts.append(f"{name} {p['verdict']} ({_fmt_diff(p)}, {why})")
    n = max(ns) if ns else 0
    weak = any(p["weak"] for p in metrics.values())
    missing = sorted({s for p in metrics.values() for s in p["missing"]})
    line = f"{label} vs {baseline} over {n} seed{'s' if n != 1 else ''}"
    if missing:
        seeds = f"seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
        line += f" ({seeds} unpaired: a run without result)"
    line += ": " + "; ".join(parts)
    if weak:
        line += f" [weak: fewer than {STRONG_SEEDS} paired seeds]"
    return line
