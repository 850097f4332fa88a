"""`ablate --preset`: the preset expands to the protocol docs/accuracy.md measured (flags given win), the plan
carries those flags to every run, the shipped hyp.ablate.yaml differs from hyp.demo.yaml exactly where it says,
and --preset with --resume is refused with one error line. No training here."""
import shlex
from pathlib import Path

import pytest
import yaml

from yolov5_dattn import cli
from yolov5_dattn.analysis.ablation_presets import PRESETS, expand, flag_names
from yolov5_dattn.cli import ablate, make_demo_data
from yolov5_dattn.demo_data import PRESETS as DATA_PRESETS
from yolov5_dattn.shipped import kind_of, resolve

# The protocol of docs/accuracy.md ("A stable protocol"): ablate --preset demo means exactly this.
DEMO_FLAGS = ["--hyp", "hyp.ablate.yaml", "--optimizer", "AdamW", "--batch-size", "8", "--workers", "1"]


def test_demo_preset_expands_to_the_documented_protocol():
    assert expand(PRESETS["demo"], None, None, None, []) == (12, 160, [0, 1, 2], DEMO_FLAGS)


def test_dense_preset_expands_to_the_documented_protocol():
    # docs/accuracy.md ("The dense protocol"): demo's flags, 36 epochs (stock's mAP50 std 0.008 over 3 seeds)
    assert expand(PRESETS["dense"], None, None, None, []) == (36, 160, [0, 1, 2], DEMO_FLAGS)


@pytest.mark.parametrize("name, data_preset", [("demo", "shapes"), ("dense", "dense")])
def test_each_preset_names_a_data_command_that_makes_its_data_at_its_size(name, data_preset):
    words = shlex.split(PRESETS[name].data_command)
    assert words[:2] == ["yolov5-dattn", "make-demo-data"]
    args = make_demo_data.parse_args(words[2:])
    assert args.preset == data_preset and args.preset in DATA_PRESETS
    assert (args.n_train, args.n_val, args.imgsz, args.no_video) == (512, 128, PRESETS[name].imgsz, True)


def test_help_lists_every_preset_with_its_summary():
    text = " ".join(ablate.build_parser().format_help().split())  # argparse wraps the lines
    assert "--preset {demo,dense}" in text
    assert all(f"{p.name}: {' '.join(p.summary.split())}" in text for p in PRESETS.values())


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
