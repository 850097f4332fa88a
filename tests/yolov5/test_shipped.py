"""Shipped YAMLs by bare name (`--cfg yolov5l_c3_dattn.yaml`): the lookup, a path winning, the runner's flags,
YOLOv5's `Model(name)`, shipped data YAMLs read from the current folder, and the `yolov5-dattn` dispatcher."""
import os
from pathlib import Path

import pytest

from conftest import REPO, TRAIN_FLAGS, run_task
from yolov5_dattn import cli, shipped
from yolov5_dattn.hosts.yolov5.data_yaml import resolve_path

CONFIGS = REPO / "yolov5_dattn" / "configs"


def test_checkout_configs_is_a_link_to_the_shipped_folder():
    assert (REPO / "configs").is_symlink() and os.readlink(REPO / "configs") == "yolov5_dattn/configs"
    assert shipped.CONFIGS == CONFIGS.resolve()


def test_list_configs_by_kind():
    models = shipped.list_configs("cfg")
    # 12 recipe configs, 10 of the safe insertion (_ls), 2 with sparse queries (_sparse); the ultralytics host's
    # YAMLs are a kind of their own
    assert len(models) == 24 and sum(name.endswith("_sparse.yaml") for name in models) == 2 and models[0] == "yolov5l_c3_dattn.yaml" and "segment/yolov5n-seg_c3_dattn.yaml" in models
    assert sum(name.endswith("_ls.yaml") for name in models) == 10
    ultralytics = shipped.list_configs(shipped.ULTRALYTICS)
    assert "ultralytics/yolo11-c3k2-dattn.yaml" in ultralytics and not set(ultralytics) & set(models)
    assert shipped.list_configs("data") == ["demo_shapes.yaml", "segment/demo_shapes-seg.yaml"]
    assert shipped.list_configs("hyp") == ["hyp.ablate.yaml", "hyp.demo.yaml"]
    assert sorted(shipped.list_configs()) == sorted(models + ultralytics + shipped.list_configs("data") +
                                                    ["hyp.ablate.yaml", "hyp.demo.yaml"])
    with pytest.raises(ValueError):
        shipped.list_configs("weights")


@pytest.mark.parametrize("name,kind,expected", [
    ("yolov5l_c3_dattn.yaml", "cfg", "yolov5l_c3_dattn.yaml"),
    ("yolov5l_c3_dattn", "cfg", "yolov5l_c3_dattn.yaml"),
    ("segment/yolov5n-seg_c3_dattn.yaml", "cfg", "segment/yolov5n-seg_c3_dattn.yaml"),
    ("yolov5n-seg_c3_dattn.yaml", "cfg", "segment/yolov5n-seg_c3_dattn.yaml"),
    ("demo_shapes-seg.yaml", "data", "segment/demo_shapes-seg.yaml"),
    ("hyp.demo.yaml", "hyp", "hyp.demo.yaml"),
])
def test_bare_names_resolve_to_the_shipped_file(name, kind, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(shipped.resolve(name, kind)) == shipped.CONFIGS / expected


@pytest.mark.parametrize("name,kind", [("hyp.demo.yaml", "cfg"), ("yolov5n_c3_dattn.yaml", "data"),
                                       ("yolov5n.yaml", "cfg"), ("nope.yaml", "hyp"), ("", "cfg"),
                                       ("https://x/yolov5n_c3_dattn.yaml", "cfg")])
def test_other_names_come_back_unchanged(name, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve(name, kind) == name


def test_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("yolov5n_c3_dattn.yaml").write_text("nc: 1\n")
    assert shipped.resolve("yolov5n_c3_dattn.yaml", "cfg") == "yolov5n_c3_dattn.yaml"


def test_model_builds_from_a_shipped_name(tmp_path, monkeypatch):
    from yolov5.models.yolo import Model, SegmentationModel
    monkeypatch.chdir(tmp_path)
    model = Model("yolov5n_c3_dattn.yaml", nc=3)
    assert model.yaml["nc"] == 3 and model.yaml["backbone"][8][2] == "C3_DAttention"
    assert type(SegmentationModel(cfg="yolov5n-seg_c3_dattn.yaml")).__name__ == "SegmentationModel"
    with pytest.raises(FileNotFoundError):
        Model("nope.yaml")


def test_shipped_data_yaml_reads_its_path_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "data" / "det").mkdir(parents=True)
    data = resolve_path(shipped.CONFIGS / "demo_shapes.yaml", {"path": "../demo/data/det"})
    assert data["path"] == str(tmp_path / "demo" / "data" / "det")
    # not generated yet: the path still points under the current folder (the val check names it)
    seg = resolve_path(shipped.CONFIGS / "segment" / "demo_shapes-seg.yaml", {"path": "../../demo/data/seg"})
    assert seg["path"] == str(tmp_path / "demo" / "data" / "seg")


def test_checkout_data_yaml_is_relative_to_the_link_not_the_package(tmp_path, monkeypatch):
    """A checkout's configs/ links into the package: ../demo is beside the link, seen from any folder."""
    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    (checkout / "demo" / "data" / "det").mkdir(parents=True)
    (checkout / "configs").symlink_to(CONFIGS)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = resolve_path(checkout / "configs" / "demo_shapes.yaml", {"path": "../demo/data/det"})
    assert data["path"] == str(checkout / "demo" / "data" / "det")


def test_runner_takes_bare_names_and_names_a_missing_hyp(demo, tmp_path, monkeypatch, capsys):
    from yolov5_dattn.hosts.yolov5 import entrypoint
    monkeypatch.chdir(tmp_path)
    opt, _ = entrypoint.parse("train", ["--cfg", "yolov5n_c3_dattn.yaml", "--hyp", "hyp.demo.yaml",
                                        "--data", "demo_shapes.yaml"])
    assert (Path(opt.cfg), Path(opt.hyp), Path(opt.data)) == tuple(
        shipped.CONFIGS / name for name in ("yolov5n_c3_dattn.yaml", "hyp.demo.yaml", "demo_shapes.yaml"))
    opt, _ = entrypoint.parse("val", ["--data", "demo_shapes.yaml"])  # val's parse_opt checks --data itself
    assert Path(opt.data) == shipped.CONFIGS / "demo_shapes.yaml"

    assert run_task("train", "--cfg", "yolov5n_c3_dattn.yaml", "--hyp", "MISSING.yaml", "--data", demo["det_yaml"],
                    *TRAIN_FLAGS, "--project", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --hyp MISSING.yaml not found")
    assert not (tmp_path / "runs").exists()


def test_cli_help_unknown_and_segment(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in ("train", "segment", "compare", "visualize", "demo", "configs"))
    for argv, start in ((["nonsense"], "error: yolov5-dattn nonsense: unknown command"),
                        ([], "error: yolov5-dattn no command given"),
                        (["segment", "detect"], "error: yolov5-dattn segment detect: unknown command")):
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1 and captured.err.startswith(start)
    with pytest.raises(SystemExit) as e:
        cli.main(["segment", "train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: yolov5-dattn segment train" in out and "--trust-checkpoint" in out
