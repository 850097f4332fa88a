"""`yolov5-dattn ablate`: the bad inputs (one `error:` line, exit 2, nothing written), the table's arithmetic,
finding/continuing an ablation folder, and one real ablation on the tiny demo data: a config, its automatic
stock baseline and the transfer row, then an interrupted-and-broken run continued by re-running the same
command (finished runs skipped, the failure reported in the table)."""
import json
import os
from pathlib import Path

import pytest

from conftest import REPO, SEG_CFG
from yolov5_dattn import cli
from yolov5_dattn.analysis import ablation

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
