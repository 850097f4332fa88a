"""`yolov5-dattn ablate`: the bad inputs (one `error:` line, exit 2, nothing written), the table's arithmetic,
finding/continuing an ablation folder, and one real ablation on the tiny demo data: a config, its automatic
stock baseline and the transfer row, then an interrupted-and-broken run continued by re-running the same
command (finished runs skipped, the failure reported in the table)."""
import json
import math
import os
from pathlib import Path

import pytest

from conftest import REPO, SEG_CFG
from yolov5_dattn import cli
from yolov5_dattn.analysis import ablation, significance

LS = REPO / "configs" / "yolov5n_c3_dattn_ls.yaml"


def _ablate(args, capsys):
    rc = cli.main(["ablate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args,words", [
    ([], "--data --cfg --epochs --imgsz missing"),
    (["--data", "DATA", "--cfg", "nope.yaml", "--epochs", 1, "--imgsz", 64], "--cfg nope.yaml: no such file"),
    (["--data", "nope.yaml", "--cfg", LS, "--epochs", 1, "--imgsz", 64], "--data nope.yaml not found"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 0, "--imgsz", 64], "--epochs 0 is too small"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 100], "--imgsz 100 is not a multiple of 32"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 64, "--seeds", 1, 1], "--seeds 1 1: give distinct"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 64, "--seed", 3], "--seed: the ablation sets it"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 64, "--img", 64], "--img: the ablation sets it"),
    (["--data", "DATA", "--cfg", LS, SEG_CFG, "--epochs", 1, "--imgsz", 64], "mixes detection and segmentation"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 64, "--bogus-flag", 3],
     "unrecognized arguments: --bogus-flag 3"),
    (["--data", "DATA", "--cfg", LS, "--epochs", 1, "--imgsz", 64, "--hyp", "nope.yaml"], "--hyp nope.yaml not found"),
    (["--resume"], "--resume: no ablation under"),
    (["--resume", "--epochs", 3], "--resume continues an ablation as it was planned: drop --epochs"),
], ids=["nothing", "cfg", "data", "epochs", "imgsz", "seeds", "seed", "img", "mixed", "unknown", "hyp",
        "resume-none", "resume-flags"])
def test_bad_input_is_one_error_line_and_writes_nothing(args, words, demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [demo["det_yaml"] if a == "DATA" else a for a in args]
    rc, out, err = _ablate(args, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0]
    assert "Traceback" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/ folder, nothing half-written


def _status(seed, map50, map_, e1, seconds=60.0, status="done"):
    metrics = {"final": {"map50": map50, "map": map_}, "epoch1": {"map50": e1}, "best": {}} if status == "done" else None
    return {"status": status, "seconds": seconds, "returncode": 0 if status == "done" else 1,
            "error": None if status == "done" else "error: boom", "metrics": metrics}


def test_summary_is_mean_and_sample_std_over_seeds_and_lists_failures(tmp_path):
    a, b = tmp_path / "yolov5n.yaml", tmp_path / "yolov5n_x.yaml"
    plan = ablation.make_plan("train", "d.yaml", [b], [a], 64, 2, [0, 1, 2], ["--batch-size", "4"])
    assert [r["key"] for r in plan["runs"]] == ["yolov5n-seed0", "yolov5n_x-seed0", "yolov5n-seed1",
                                                "yolov5n_x-seed1", "yolov5n-seed2", "yolov5n_x-seed2"]
    statuses = {"yolov5n-seed0": _status(0, 0.5, 0.2, 0.1), "yolov5n-seed1": _status(1, 0.7, 0.4, 0.3),
                "yolov5n-seed2": _status(2, 0.6, 0.3, 0.2, status="failed"),
                "yolov5n_x-seed0": _status(0, 0.8, 0.5, 0.0), "yolov5n_x-seed1": None,
                "yolov5n_x-seed2": _status(2, 0.9, 0.6, 0.1)}
    cost = {str(a): {"params": 100, "gflops": 0.5, "latency_ms": 2.0}}
    summary = ablation.summarise(plan, statuses, cost)
    base, other = summary["rows"]
    assert base["seeds_done"] == 2 and base["seeds_planned"] == 3
    assert base["map50"]["mean"] == pytest.approx(0.6) and base["map50"]["std"] == pytest.approx(0.1414213562)
    assert base["map50"]["values"] == [0.5, 0.7] and base["params"] == 100 and other["params"] is None
    assert other["map"]["mean"] == pytest.approx(0.55) and other["seeds_done"] == 2
    md = ablation.format_markdown(summary)
    assert "| yolov5n | scratch, 2 ep | 2/3 | 0.600 ± 0.141 | 0.300 ± 0.141 | 0.200 ± 0.141 | 100 | 0.500 | 2.0 |" in md
    assert "- yolov5n, seed 2: failed (exit 1): error: boom" in md
    assert "- yolov5n_x, seed 1: pending" in md


def test_summary_pairs_each_model_with_stock_by_seed(tmp_path):
    a, b = tmp_path / "yolov5n.yaml", tmp_path / "yolov5n_x.yaml"
    plan = ablation.make_plan("train", "d.yaml", [b], [a], 64, 2, [0, 1, 2], [], transfer=True)
    statuses = {"yolov5n-seed0": _status(0, 0.5, 0.2, 0.1), "yolov5n-seed1": _status(1, 0.7, 0.4, 0.3),
                "yolov5n-seed2": _status(2, 0.6, 0.3, 0.2),
                "yolov5n_x-seed0": _status(0, 0.55, 0.25, 0.0), "yolov5n_x-seed1": _status(1, 0.76, 0.43, 0.0),
                "yolov5n_x-seed2": _status(2, 0.64, 0.34, 0.1),
                "yolov5n_x-from-yolov5n-seed0": _status(0, 0.4, 0.1, 0.1),
                "yolov5n_x-from-yolov5n-seed1": None, "yolov5n_x-from-yolov5n-seed2": _status(2, 0.9, 0.2, 0.1)}
    base, x, transfer = ablation.summarise(plan, statuses, {})["rows"]
    assert base["paired"] is None
    p = x["paired"]
    assert p["baseline"] == "yolov5n"
    assert p["map50"]["diffs"] == [0.05, 0.06, 0.04] and p["map50"]["mean"] == pytest.approx(0.05)
    assert p["map50"]["std"] == pytest.approx(0.01) and p["map50"]["t"] == pytest.approx(8.660254)
    assert p["map50"]["verdict"] == "better"  # t 8.66 > 4.30: every seed gains about the same
    assert p["map"]["diffs"] == [0.05, 0.03, 0.04] and p["map"]["verdict"] == "better"
    assert p["verdict"] == ("yolov5n_x vs yolov5n over 3 seeds: mAP50 better (+0.050 ± 0.010, |t| 8.66 > 4.30); "
                            "mAP50-95 better (+0.040 ± 0.010, |t| 6.93 > 4.30)")
    # the transfer row pairs with the stock run it started from; its seed 1 is missing, seed 0 lost, seed 2 won
    q = transfer["paired"]
    assert q["baseline"] == "yolov5n" and q["map50"]["seeds"] == [0, 2] and q["map50"]["missing"] == [1]
    assert q["map50"]["diffs"] == [-0.1, 0.3] and q["map50"]["verdict"] == "within noise" and q["map50"]["weak"]
    md = ablation.format_markdown(ablation.summarise(plan, statuses, {}))
    assert "| yolov5n_x | yolov5n | 3/3 | s0 +0.050, s1 +0.060, s2 +0.040 | +0.050 ± 0.010 | " \
           "s0 +0.050, s1 +0.030, s2 +0.040 | +0.040 ± 0.010 |" in md
    assert "| yolov5n_x <- yolov5n | yolov5n | 2/3 | s0 -0.100, s2 +0.300 | +0.100 ± 0.283 |" in md
    assert ("- yolov5n_x <- yolov5n vs yolov5n over 2 seeds (seed 1 unpaired: a run without result): mAP50 within "
            "noise (+0.100 ± 0.283, |t| 0.50 ≤ 12.71); ") in md
    assert "Rows `<- stock` are compared with the stock run they started from" in md


def test_paired_difference_mixed_signs_is_within_noise():
    # issue 27's numbers: _ls − stock over seeds 0, 1, 2
    p = significance.paired_difference({0: 0.700, 1: 0.855, 2: 0.826}, {0: 0.905, 1: 0.686, 2: 0.909})
    assert p["diffs"] == [-0.205, 0.169, -0.083] and p["seeds"] == [0, 1, 2] and p["missing"] == []
    assert p["mean"] == pytest.approx(-0.0396667, abs=1e-6) and p["std"] == pytest.approx(0.1907284, abs=1e-6)
    assert p["t"] == pytest.approx(-0.360223, abs=1e-5) and p["t_crit"] == pytest.approx(4.302653, abs=1e-5)
    assert p["ci"] == pytest.approx([-0.513462, 0.434129], abs=1e-5)
    assert p["verdict"] == "within noise" and not p["weak"]


def test_paired_difference_worse_needs_t_beyond_the_critical_value():
    worse = significance.paired_difference({0: 0.45, 1: 0.44, 2: 0.46}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert worse["diffs"] == [-0.05, -0.06, -0.04] and worse["verdict"] == "worse"
    # same mean, spread 0.05: |t| 1.73 < 4.30
    noisy = significance.paired_difference({0: 0.40, 1: 0.45, 2: 0.50}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert noisy["mean"] == pytest.approx(-0.05) and noisy["std"] == pytest.approx(0.05)
    assert noisy["t"] == pytest.approx(-1.732051) and noisy["verdict"] == "within noise"
    assert significance.t_critical(1) == pytest.approx(12.706205)
    assert significance.t_critical(4) == pytest.approx(2.776445)


def test_paired_difference_one_seed_all_equal_and_missing_runs():
    one = significance.paired_difference({0: 0.9}, {0: 0.5})
    assert one["diffs"] == [0.4] and one["mean"] == pytest.approx(0.4) and one["std"] is None
    assert one["t"] is None and one["verdict"] == "within noise" and one["weak"]  # no spread to test against
    equal = significance.paired_difference({0: 0.5, 1: 0.7, 2: 0.6}, {0: 0.5, 1: 0.7, 2: 0.6})
    assert equal["diffs"] == [0.0, 0.0, 0.0] and equal["std"] == 0.0 and equal["t"] is None
    assert equal["verdict"] == "within noise"
    # every seed gains exactly 0.3 (float noise of 0.8-0.5 vs 0.9-0.6 rounded away): no seed disagrees
    same_gain = significance.paired_difference({0: 0.8, 1: 0.9, 2: 1.0}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert same_gain["diffs"] == [0.3, 0.3, 0.3] and same_gain["std"] == 0.0
    assert same_gain["t"] == math.inf and same_gain["verdict"] == "better"
    missing = significance.paired_difference({0: 0.8, 1: None, 2: 0.7}, {0: 0.5, 1: 0.7, 3: 0.6})
    assert missing["seeds"] == [0] and missing["missing"] == [1, 2, 3] and missing["n"] == 1
    none = significance.paired_difference({0: None}, {0: 0.5})
    assert none["n"] == 0 and none["mean"] is None and none["verdict"] is None and none["weak"]
    names = {"map50": "mAP50", "map": "mAP50-95"}
    assert significance.verdict_line("a", "b", {"map50": one, "map": none}, names) == (
        "a vs b over 1 seed (seed 0 unpaired: a run without result): mAP50 within noise (+0.400, one seed: no "
        "spread to test against); mAP50-95 no verdict (no seed where both runs finished) "
        "[weak: fewer than 3 paired seeds]")
    assert significance.verdict_line("a", "b", {"map50": equal}, names) == (
        "a vs b over 3 seeds: mAP50 within noise (+0.000 ± 0.000, no seed differs)")
    assert significance.verdict_line("a", "b", {"map50": same_gain}, names) == (
        "a vs b over 3 seeds: mAP50 better (+0.300 ± 0.000, |t| inf > 4.30)")


def _fake_finished_ablation(folder, seeds, tmp_path):
    """An ablation folder whose runs all finished (plan.json, cost.json, status/*.json as `ablate` writes
    them), so `ablate --resume` only tabulates."""
    a, b = tmp_path / "yolov5n.yaml", tmp_path / "yolov5n_x.yaml"
    plan = ablation.make_plan("train", "d.yaml", [b], [a], 64, 2, seeds, [])
    ablation.write_json(folder / "plan.json", plan)
    ablation.write_json(folder / "cost.json", {str(a): {"params": 100, "gflops": 0.5, "latency_ms": 2.0}})
    for seed in seeds:
        ablation.write_json(folder / "status" / f"yolov5n-seed{seed}.json", _status(seed, 0.5 + seed / 10, 0.2, 0.1))
        ablation.write_json(folder / "status" / f"yolov5n_x-seed{seed}.json",
                            _status(seed, 0.5 + seed / 10 + (-1) ** seed * 0.02, 0.2, 0.1))
    return plan


@pytest.mark.parametrize("seeds,weak", [([0], True), ([0, 1], True), ([0, 1, 2], False)])
def test_resumed_finished_ablation_prints_verdicts_and_warns_below_three_seeds(seeds, weak, tmp_path, capsys):
    folder = tmp_path / "runs" / "ablate" / "exp"
    _fake_finished_ablation(folder, seeds, tmp_path)
    rc, out, err = _ablate(["--resume", folder, "--no-plot"], capsys)
    assert rc == 0, out + err
    assert f"{2 * len(seeds)} runs ({2 * len(seeds)} already finished)" in out
    assert out.count("done before, skipped") == 2 * len(seeds)  # nothing retrained
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    if weak:
        assert warnings == [f"warning: {len(seeds)} seed{'s' * (len(seeds) > 1)} ({' '.join(map(str, seeds))}): the "
                            f"better/worse verdicts are weak (a single run swings by more than most differences "
                            f"between models): use --seeds with 3 or more seeds, e.g. --seeds 0 1 2"]
    else:
        assert warnings == []
    verdict = [line for line in out.splitlines() if line.startswith("- yolov5n_x vs yolov5n")]
    assert len(verdict) == 1 and "mAP50 within noise" in verdict[0]  # +0.02, -0.02, +0.02: mixed signs
    assert verdict[0].endswith("[weak: fewer than 3 paired seeds]") == weak
    result = json.loads((folder / "results.json").read_text())
    assert result["rows"][1]["paired"]["map50"]["diffs"] == [0.02, -0.02, 0.02][:len(seeds)]


def test_metrics_come_from_results_csv(tmp_path):
    csv = tmp_path / "results.csv"
    head = ["epoch", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]
    csv.write_text(",".join(f"{h:>20}" for h in head) + "\n" + "\n".join(
        ",".join(f"{v:>20}" for v in row) for row in [(0, 0.1, 0.05), (1, 0.6, 0.3), (2, 0.5, 0.2)]) + "\n")
    m = ablation.read_metrics(csv, "train")
    assert m["final"] == {"map50": 0.5, "map": 0.2} and m["epoch1"] == {"map50": 0.1, "map": 0.05}
    assert m["best"]["epoch"] == 2 and m["map50_per_epoch"] == [0.1, 0.6, 0.5] and m["epochs_run"] == 3
    assert ablation.read_metrics(csv, "train", validated_every_epoch=False)["epoch1"]["map50"] is None
    assert ablation.read_metrics(tmp_path / "none.csv", "train") is None


def test_folder_choice_continues_the_same_unfinished_plan_only(tmp_path):
    plan = ablation.make_plan("train", "d.yaml", [tmp_path / "b.yaml"], [tmp_path / "a.yaml"], 64, 1, [0], [])
    first, _, cont = ablation.choose_folder(tmp_path, "exp", plan, None)
    assert first == tmp_path / "exp" and not cont
    ablation.write_json(first / "plan.json", plan)
    assert ablation.choose_folder(tmp_path, "exp", plan, None)[1:] == (plan, True)  # unfinished: continue it
    other = {**plan, "epochs": 2}
    assert ablation.choose_folder(tmp_path, "exp", other, None)[0] == tmp_path / "exp2"
    for r in plan["runs"]:
        ablation.write_json(first / "status" / f"{r['key']}.json", {"status": "done"})
    assert ablation.choose_folder(tmp_path, "exp", plan, None)[0] == tmp_path / "exp2"  # finished: a new one
    assert ablation.choose_folder(tmp_path, "exp", None, True)[0] == first


def test_ablate_trains_config_and_baseline_then_continues_after_a_broken_run(demo, network_attempts, tmp_path,
                                                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["--data", demo["det_yaml"], "--cfg", "yolov5n_c3_dattn_ls.yaml", "--epochs", 1, "--imgsz", 64,
            "--transfer", "--latency-runs", 1, "--batch-size", 4, "--workers", 0, "--device", "cpu", "--noplots"]
    rc, out, err = _ablate(args, capsys)
    assert rc == 0, out + err
    folder = tmp_path / "runs" / "ablate" / "exp"
    assert "[1/3] yolov5n-seed0: training 1 epochs" in out and "[3/3] yolov5n_c3_dattn_ls-from-yolov5n-seed0: done" in out
    result = json.loads((folder / "results.json").read_text())
    labels = [r["label"] for r in result["rows"]]
    assert labels == ["yolov5n", "yolov5n_c3_dattn_ls", "yolov5n_c3_dattn_ls <- yolov5n"]
    for row in result["rows"]:
        run = row["runs"][0]
        assert run["status"] == "done" and row["seeds_done"] == 1
        csv = folder / "runs" / run["key"] / "results.csv"
        assert ablation.read_metrics(csv, "train") == run["metrics"]
        assert row["map50"]["mean"] == run["metrics"]["final"]["map50"]
    base, ls, _ = result["rows"]
    assert ls["params"] - base["params"] > 0 and ls["gflops"] > base["gflops"] > 0 and base["latency_ms"] > 0
    # the transfer run started from the stock run of the same ablation, through the wrapper
    log = (folder / "logs" / "yolov5n_c3_dattn_ls-from-yolov5n-seed0.log").read_text()
    assert f"--weights {folder.relative_to(tmp_path)}/runs/yolov5n-seed0/weights/last.pt" in log.splitlines()[0]
    assert "Transfer from checkpoint:" in log
    assert (folder / "results.png").stat().st_size > 0 and (folder / "results.md").is_file()

    # an interrupted run (no status) whose source checkpoint is now broken: re-running the same command
    # continues this folder, skips the finished runs and reports the failure
    (folder / "status" / "yolov5n_c3_dattn_ls-from-yolov5n-seed0.json").unlink()
    (folder / "runs" / "yolov5n-seed0" / "weights" / "last.pt").write_bytes(b"not a checkpoint")
    rc, out, err = _ablate(args, capsys)
    assert rc == 1, out + err
    assert "2 already finished" in out and "[1/3] yolov5n-seed0: done before, skipped" in out
    assert "[3/3] yolov5n_c3_dattn_ls-from-yolov5n-seed0: FAILED: error:" in out
    assert not (tmp_path / "runs" / "ablate" / "exp2").exists()
    md = (folder / "results.md").read_text()
    assert "| yolov5n_c3_dattn_ls <- yolov5n | stock run's last.pt, 1 ep | 0/1 |" in md
    assert "- yolov5n_c3_dattn_ls <- yolov5n, seed 0: failed (exit 2): error:" in md
    assert network_attempts == []
