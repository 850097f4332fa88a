"""`yolov5-dattn ablate` with the shipped sparse-query configs: they plan against their stock model, pass the same
checks each training will run (YOLOv5's parser, the wrapper's checks, preflight), and their cost counts only the
selected queries. A bad query_ratio and an ultralytics config are refused in one line before anything is written.
No training runs here (tests/analysis/test_ablate.py runs a real ablation)."""
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from yolov5_dattn import cli
from yolov5_dattn.analysis import ablation
from yolov5_dattn.cli import ablate

SPARSE = {"train": ("yolov5s_c3_dattn_p3p4p5_sparse.yaml", "yolov5s.yaml", "det_yaml"),
          "segment-train": ("segment/yolov5s-seg_c3_dattn_p3p4p5_sparse.yaml", "yolov5s-seg.yaml", "seg_yaml")}


@pytest.mark.parametrize("task", list(SPARSE))
def test_sparse_configs_plan_against_stock_and_pass_the_training_checks(task, demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, stock, data = SPARSE[task]
    opt = ablate.build_parser().parse_args(["--data", str(demo[data]), "--cfg", cfg, "--epochs", "1",
                                            "--imgsz", "64", "--seeds", "0", "1"])
    ablate._check_numbers(opt)
    plan = ablate.new_plan(opt, [])
    assert plan["task"] == task
    assert [Path(c).name for c in plan["cfgs"]] == [Path(cfg).name]
    assert [Path(b).name for b in plan["baselines"]] == [stock]
    runs = ablation.plan_runs(plan)
    assert sorted(r.key for r in runs) == sorted(f"{Path(n).stem}-seed{s}" for n in (cfg, stock) for s in (0, 1))
    folder = tmp_path / "runs" / "ablate" / "exp"
    ablate._validate_runs(plan, folder)  # raises UserError on anything a training would refuse
    command = ablation.train_command(plan, next(r for r in runs if r.cfg == plan["cfgs"][0]), folder)
    assert command[command.index("--cfg") + 1] == plan["cfgs"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # validation writes nothing


def test_the_cost_column_counts_only_the_selected_queries():
    dense = str(REPO / "configs" / "yolov5s_c3_dattn_p3p4p5.yaml")
    sparse = str(REPO / "configs" / "yolov5s_c3_dattn_p3p4p5_sparse.yaml")
    cost = ablation.measure_cost([dense, sparse], nc=3, imgsz=128, runs=1, warmup=0)
    assert cost[sparse]["params"] > cost[dense]["params"]  # the scorers
    assert 0 < cost[sparse]["gflops"] < cost[dense]["gflops"]
    assert cost[sparse]["latency_ms"] > 0


def _run(args, capsys):
    rc = cli.main(["ablate", *map(str, args)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_a_bad_ratio_and_an_ultralytics_config_are_refused_in_one_line(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((REPO / "configs" / "yolov5s_c3_dattn_p3p4p5_sparse.yaml").read_text())
    cfg["backbone"][4][3][1]["query_ratio"] = 1.5
    bad = tmp_path / "bad_sparse.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    common = ["--data", demo["det_yaml"], "--epochs", 1, "--imgsz", 64]
    rc, err = _run(["--cfg", bad, *common], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --cfg bad_sparse.yaml: "), err
    assert "query_ratio must be a number in (0, 1]" in err[0]
    for name in ("ultralytics/yolo11-c3k2-dattn-p3p4p5-sparse.yaml", "yolo11n-c3k2-dattn-p3p4p5-sparse.yaml"):
        rc, err = _run(["--cfg", name, *common], capsys)
        assert rc == 2 and err == [f"error: --cfg {name}: an ultralytics model, and ablate trains YOLOv5 models: "
                                   f"train it with yolov5-dattn yolo train, compare its cost with yolov5-dattn "
                                   f"compare, or ablate a YOLOv5 config (yolov5-dattn configs lists them)"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_sparse.yaml"]  # no runs/ folder
