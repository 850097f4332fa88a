"""`ablate --preset`: the preset expands to the protocol docs/accuracy.md measured (flags given win), the plan
carries those flags to every run, the shipped hyp.ablate.yaml differs from hyp.demo.yaml exactly where it says,
and --preset with --resume is refused with one error line. No training here."""
from pathlib import Path

import yaml

from yolov5_dattn import cli
from yolov5_dattn.analysis.ablation_presets import PRESETS, expand, flag_names
from yolov5_dattn.cli import ablate
from yolov5_dattn.shipped import kind_of, resolve

# The protocol of docs/accuracy.md ("A stable protocol"): ablate --preset demo means exactly this.
DEMO_FLAGS = ["--hyp", "hyp.ablate.yaml", "--optimizer", "AdamW", "--batch-size", "8", "--workers", "1"]


def test_demo_preset_expands_to_the_documented_protocol():
    assert expand(PRESETS["demo"], None, None, None, []) == (12, 160, [0, 1, 2], DEMO_FLAGS)


def test_flags_given_win_over_the_preset():
    epochs, imgsz, seeds, args = expand(PRESETS["demo"], 30, None, [4, 5, 6],
                                        ["--batch-size=16", "--device", "cpu", "--hyp", "my.yaml"])
    assert (epochs, imgsz, seeds) == (30, 160, [4, 5, 6])
    assert args == ["--batch-size=16", "--device", "cpu", "--hyp", "my.yaml", "--optimizer", "AdamW",
                    "--workers", "1"]
    assert flag_names(args).count("--batch-size") == 1 and flag_names(args).count("--hyp") == 1


def test_preset_reaches_the_plan_of_every_run(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images",
                                    "names": {0: "a", 1: "b", 2: "c"}}))
    opt, train_args = ablate.build_parser().parse_known_args(
        ["--preset", "demo", "--data", str(data), "--cfg", "yolov5n_c3_dattn_ls.yaml", "--device", "cpu"])
    train_args = ablate.apply_preset(opt, train_args)
    plan = ablate.new_plan(opt, train_args)
    assert (plan["epochs"], plan["imgsz"], plan["seeds"]) == (12, 160, [0, 1, 2])
    assert plan["train_args"] == ["--device", "cpu", *DEMO_FLAGS]
    assert [(r["label"], r["seed"]) for r in plan["runs"]] == [
        (label, seed) for seed in (0, 1, 2) for label in ("yolov5n", "yolov5n_c3_dattn_ls")]


def test_shipped_ablation_hyp_is_the_demo_hyp_but_for_the_end_lr_and_the_bias_warmup():
    path = Path(resolve("hyp.ablate.yaml", "hyp"))
    assert path.is_file() and kind_of(path) == "hyp"
    ours = yaml.safe_load(path.read_text())
    demo = yaml.safe_load(Path(resolve("hyp.demo.yaml", "hyp")).read_text())
    assert set(ours) == set(demo)
    assert {k: (demo[k], ours[k]) for k in ours if ours[k] != demo[k]} == {"lrf": (0.1, 0.01),
                                                                            "warmup_bias_lr": (0.1, 0.0)}


def test_preset_with_resume_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["ablate", "--resume", "--preset", "demo"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and lines == ["error: --resume continues an ablation as it was planned: drop --preset"]
    assert list(tmp_path.iterdir()) == []
