"""Resolution checks before any work: feature-map sizes from the built model, fixed_pe refusals and
switches, imgsz multiples, broken model YAMLs, data YAML paths, and the scripts' one-line errors."""
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import yaml

from yolov5_dattn.hosts.yolov5 import fmap, square_inputs
from yolov5_dattn.errors import UserError
from yolov5_dattn.hosts.yolov5.preflight import build_from_cfg, preflight

REPO = Path(__file__).resolve().parents[2]
DET_CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"


def _cfg(tmp_path, name: str, layer8_args, module: str = "C3_DAttention", at: int = 8) -> Path:
    """yolov5n_c3_dattn.yaml with layer `at` replaced by `module` with args `layer8_args`."""
    cfg = yaml.safe_load(DET_CFG.read_text())
    cfg["backbone"][8] = [-1, 3, "C3", [1024]]
    n = cfg["backbone"][at][1]
    cfg["backbone"][at] = [-1, n, module, layer8_args]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def fixed_cfg(tmp_path_factory) -> Path:
    """P5 DAttention with fixed_pe declared for [2, 2], i.e. --imgsz 64."""
    return _cfg(tmp_path_factory.mktemp("cfg"), "fixed", [1024, {"q_size": [2, 2], "fixed_pe": True,
                                                                "dwc_pe": False}])


def _train_opt(cfg, **kw) -> Namespace:
    return Namespace(**{"cfg": str(cfg), "weights": "", "imgsz": 640, "rect": False, "multi_scale": False,
                        "resume": False, **kw})


@pytest.fixture(autouse=True)
def _square_inputs_off():
    yield
    square_inputs.set_active(False)


# ---- the arithmetic of YOLOv5's input sizes --------------------------------------------------------
def test_yolov5_size_rules():
    assert fmap.rect_val_long_side(640, 32) == 672  # val.py pads rect batches by half a stride
    assert fmap.feature_map([672, 672], 32) == (21, 21)
    assert fmap.multiscale_range(640, 32) == (320, 960)
    assert fmap.letterbox_shape((1080, 1920), (640, 640), 32) == (384, 640)  # 16:9 video
    assert fmap.letterbox_shape((1080, 1920), (640, 640), 32, auto=False) == (640, 640)
    assert fmap.feature_map([100, 60], 32) == (4, 2)  # stride-2 convs round up


def test_letterbox_shape_matches_yolov5():
    import numpy as np
    from yolov5.utils.augmentations import letterbox
    for h, w in ((1080, 1920), (64, 96), (480, 640), (333, 500), (500, 333)):
        out = letterbox(np.zeros((h, w, 3), np.uint8), (128, 128), stride=32, auto=True)[0]
        assert fmap.letterbox_shape((h, w), (128, 128), 32) == out.shape[:2]


def test_strides_come_from_the_built_model(tmp_path):
    p5 = fmap.find_attention(build_from_cfg(str(DET_CFG)))
    assert [(s.name, s.stride, s.declared, s.size_fixed) for s in p5] == [("model.8.m.0.attention", 32, (20, 20),
                                                                           False)]
    # the same block moved to the P4 level (layer 6): no YAML parsing, the probe finds stride 16
    p4 = fmap.find_attention(build_from_cfg(str(_cfg(tmp_path, "p4", [512, [40, 40]], at=6))))
    assert {s.stride for s in p4} == {16} and len(p4) == 3  # depth 0.33 × 9 -> 3 bottlenecks
    assert p4[0].fmap([640, 640]) == (40, 40)


def test_probe_leaves_model_mode_and_batchnorm_statistics_alone():
    model = build_from_cfg(str(DET_CFG))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fmap.find_attention(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- size-agnostic variants: run anywhere, say what they see ---------------------------------------
def test_size_agnostic_train_reports_each_layer(capsys):
    opt = _train_opt(DET_CFG, imgsz=640, rect=True, multi_scale=True)
    lines = preflight(opt, "train")
    assert lines == ["DAttention model.8.m.0.attention: stride 32, dwc_pe, declared [20, 20] (any size); "
                     "--imgsz 640 -> [20, 20]; --rect: long side 20, short side by aspect; "
                     "--multi-scale [10, 10]..[30, 30]; validation (rectangular, padded): long side 21, "
                     "short side by aspect"]
    assert capsys.readouterr().out == f"preflight: {lines[0]}\n"
    assert opt.rect and opt.multi_scale and not square_inputs.active()  # nothing switched off


def test_size_agnostic_detect_reports_letterboxed_video(demo):
    model = build_from_cfg(str(DET_CFG))
    opt = Namespace(weights="unused.pt", imgsz=[128, 128], source=str(demo["video"]))
    [line] = preflight(opt, "detect", models=[model])
    assert line.endswith("--imgsz 128 128 -> [4, 4]; --source letterboxed -> [3, 4]")  # 64x96 -> 96x128


# ---- fixed_pe: refuse what cannot fit, switch off what it cannot follow -----------------------------
def test_fixed_pe_wrong_imgsz_names_flag_and_right_values(fixed_cfg):
    with pytest.raises(UserError) as e:
        preflight(_train_opt(fixed_cfg, imgsz=320), "train")
    assert str(e.value) == ("model.8.m.0.attention (fixed_pe) is declared for 2x2 (--imgsz 64) but --imgsz 320 "
                            "gives 10x10: use --imgsz 64 or set q_size [10, 10] in the model YAML's fmapsize")


def test_fixed_pe_switches_off_rect_and_multiscale_and_squares_validation(fixed_cfg, capsys):
    opt = _train_opt(fixed_cfg, imgsz=64, rect=True, multi_scale=True)
    lines = preflight(opt, "train")
    assert not opt.rect and not opt.multi_scale
    assert square_inputs.active()
    assert lines[1].startswith("--rect switched off: model.8.m.0.attention uses fixed_pe [2, 2]")
    assert lines[2].startswith("--multi-scale switched off") and lines[2].endswith("[1, 1]..[3, 3]")
    assert "validation uses square 64x64 inputs" in lines[3]
    assert capsys.readouterr().out.count("preflight: ") == 4
    # the next run in the same process starts clean
    preflight(_train_opt(DET_CFG, imgsz=64), "train")
    assert not square_inputs.active()


def test_square_inputs_change_yolov5_loaders(demo):
    """With square inputs on, YOLOv5's own val loader and inference loader yield imgsz × imgsz."""
    import yolov5.detect
    import yolov5.val
    square_inputs.install()

    def val_batch_shape():
        loader = yolov5.val.create_dataloader(str(demo["val_images"]), 64, 4, 32, pad=0.5, rect=True,
                                              workers=0)[0]
        return tuple(next(iter(loader))[0].shape[-2:])

    def video_frame_shape():
        frames = yolov5.detect.LoadImages(str(demo["video"]), img_size=[128, 128], stride=32, auto=True)
        return next(iter(frames))[1].shape[-2:]

    assert val_batch_shape() == (96, 96) and video_frame_shape() == (96, 128)  # YOLOv5's rectangles
    square_inputs.set_active(True)
    assert val_batch_shape() == (64, 64) and video_frame_shape() == (128, 128)


def test_fixed_pe_detect_and_export(fixed_cfg):
    model = build_from_cfg(str(fixed_cfg))
    lines = preflight(Namespace(weights="w.pt", imgsz=[64, 64], source="0"), "detect", models=[model])
    assert "letterboxes every image to exactly 64x64" in lines[1] and square_inputs.active()
    # a model from --weights: its fixed_pe table cannot be edited, so only the imgsz is named
    with pytest.raises(UserError, match=r"but --imgsz 64 96 gives 2x3: use --imgsz 64: the size its fixed_pe "
                                        r"table was built for$"):
        preflight(Namespace(weights="w.pt", imgsz=[64, 96], source="0"), "detect", models=[model])
    with pytest.raises(UserError, match="^--dynamic: model.8.m.0.attention uses fixed_pe"):
        preflight(Namespace(weights="w.pt", imgsz=[64, 64], dynamic=True, include=["onnx"]), "export",
                  models=[model])


# ---- bad sizes and broken YAMLs: one line each ----------------------------------------------------
def test_imgsz_not_a_multiple_of_max_stride():
    with pytest.raises(UserError) as e:
        preflight(_train_opt(DET_CFG, imgsz=100), "train")
    assert str(e.value) == "--imgsz 100 is not a multiple of the model's max stride 32: use --imgsz 128"
    with pytest.raises(UserError, match=r"^--imgsz 640 500 is not a multiple .* use --imgsz 640 512$"):
        preflight(Namespace(weights="w.pt", imgsz=[640, 500], source="0"), "detect",
                  models=[build_from_cfg(str(DET_CFG))])


def test_unknown_module(tmp_path):
    cfg = _cfg(tmp_path, "typo", [1024, [20, 20]], module="C3_DAtention")
    with pytest.raises(UserError) as e:
        preflight(_train_opt(cfg), "train")
    assert str(e.value) == f"--cfg {cfg}: layer 8 uses unknown module 'C3_DAtention': did you mean C3_DAttention?"


def test_channels_not_divisible_by_heads(tmp_path):
    cfg = _cfg(tmp_path, "heads", [1024, {"q_size": [20, 20], "n_heads": 6}])
    with pytest.raises(UserError) as e:
        preflight(_train_opt(cfg), "train")
    message = str(e.value)
    assert message.startswith(f"--cfg {cfg}: layer 8 (C3_DAttention [256, 256, 1, ")
    assert "channels (128) must be divisible by n_heads (6) and n_groups (4)" in message
    assert "\n" not in message


def test_missing_key_and_bad_yaml(tmp_path):
    no_head = tmp_path / "nohead.yaml"
    no_head.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(DET_CFG.read_text()).items() if k != "head"}))
    with pytest.raises(UserError, match=r"^--cfg .*nohead.yaml: missing key 'head'"):
        build_from_cfg(str(no_head))
    broken = tmp_path / "broken.yaml"
    broken.write_text("nc: 3\nbackbone: [[-1, 1, Conv, [64, 6, 2, 2]\n")
    with pytest.raises(UserError, match=r"^--cfg .*broken.yaml is not valid YAML \(line \d+\): fix its syntax$"):
        build_from_cfg(str(broken))


def test_relative_data_path_is_resolved_against_the_yaml(demo, tmp_path):
    from yolov5.utils import general
    from yolov5_dattn.hosts.yolov5 import data_yaml
    data_yaml.install()
    conf = tmp_path / "configs"
    conf.mkdir()
    rel = os.path.relpath(demo["root"] / "det", conf)  # e.g. ../../data0/det
    (conf / "shapes.yaml").write_text(yaml.safe_dump({"path": rel, "train": "images/train",
                                                      "val": "images/val", "names": {0: "a", 1: "b", 2: "c"}}))
    data = general.check_dataset(str(conf / "shapes.yaml"))
    assert data["val"] == str(demo["root"] / "det" / "images" / "val")
    (conf / "missing.yaml").write_text(yaml.safe_dump({"path": "..", "train": "images/train", "val": "nowhere",
                                                       "names": {0: "a"}}))
    with pytest.raises(UserError, match=r"^--data .*missing.yaml: val images not found at .*nowhere"):
        general.check_dataset(str(conf / "missing.yaml"))


# ---- through the scripts: before any work, one line, exit 2, nothing written -----------------------
def test_scripts_refuse_before_any_work(fixed_cfg, demo, tmp_path, capsys):
    from yolov5_dattn.hosts.yolov5.entrypoint import main
    project = tmp_path / "runs"
    common = ["--data", str(demo["det_yaml"]), "--epochs", "1", "--device", "cpu", "--project", str(project)]
    assert main("train", ["--cfg", str(fixed_cfg), "--imgsz", "128", *common]) == 2
    assert capsys.readouterr().err == ("error: model.8.m.0.attention (fixed_pe) is declared for 2x2 (--imgsz 64) "
                                       "but --imgsz 128 gives 4x4: use --imgsz 64 or set q_size [4, 4] in the "
                                       "model YAML's fmapsize\n")
    assert main("train", ["--cfg", str(DET_CFG), "--imgsz", "100", *common]) == 2
    assert capsys.readouterr().err.startswith("error: --imgsz 100 is not a multiple")
    assert not project.exists()


def test_script_subprocess_exit_code_and_no_traceback(tmp_path, demo):
    cfg = _cfg(tmp_path, "typo", [1024, [20, 20]], module="C3_DAtention")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--cfg", str(cfg), "--data",
                        str(demo["det_yaml"]), "--project", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"error: --cfg {cfg}: layer 8 uses unknown module 'C3_DAtention': "
                                                 f"did you mean C3_DAttention?")
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()
