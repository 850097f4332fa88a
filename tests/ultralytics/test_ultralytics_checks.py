"""The ultralytics host's feature-map checks before any work (fixed_pe, too-small maps), layerscale in the
ultralytics blocks, and `changes` / `registry --host ultralytics`.

Models are yolo11n-c3k2-dattn (two DAttention at P5/32) with the fmapsize edited; data is the demo generator's
64-px shapes. A refusal must come before ultralytics creates its run folder: every run here writes under a
`project=` in tmp_path that must not exist afterwards.
"""
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import yolov5_dattn.hosts.ultralytics as host
from conftest import NETGUARD, REPO
from ultralytics import YOLO
from ultralytics.nn.modules.block import C2f, C3k2
from yolov5_dattn.errors import UserError
from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.nn.sites import AttentionSite
from yolov5_dattn.hosts.ultralytics import fmap_checks
from yolov5_dattn.hosts.ultralytics.fmap_checks import FeatureMapError, Plan, check_plan

host.use_policy()  # our commands' policy (safe loading, offline, checks first), as the CLI runs

SHIPPED = REPO / "configs" / "ultralytics" / "yolo11-c3k2-dattn.yaml"
FIXED = {"fixed_pe": True, "dwc_pe": False}
RUN = dict(device="cpu", workers=0, plots=False, exist_ok=True, verbose=False)
WRONG_20_AT_160 = ("model.8.m.0.m.0.attention (fixed_pe) is declared for 20x20 (imgsz=640) but imgsz=160 gives "
                   "5x5: use imgsz=640 or set q_size [5, 5] in the model YAML's fmapsize")


def _config(folder: Path, name: str, fmapsize) -> Path:
    """yolo11n-c3k2-dattn.yaml with layer 8's fmapsize replaced; the file name keeps scale n."""
    cfg = yaml.safe_load(SHIPPED.read_text())
    assert cfg["backbone"][8][2] == "C3k2_DAttention"
    cfg["backbone"][8][3][1] = fmapsize
    path = folder / f"yolo11n-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cfgs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ucfg")
    return {"fixed20": _config(folder, "fixed20", {"q_size": [20, 20], **FIXED}),  # imgsz 640
            "fixed2": _config(folder, "fixed2", {"q_size": [2, 2], **FIXED}),  # imgsz 64
            "fixed4": _config(folder, "fixed4", {"q_size": [4, 4], **FIXED}),  # imgsz 128
            "dwc": _config(folder, "dwc", [20, 20]),  # the shipped default, declared for imgsz 640
            "ls": _config(folder, "ls", {"q_size": [2, 2], "layerscale": 0.0})}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from yolov5_dattn.demo_data import make_demo_data
    return make_demo_data(tmp_path_factory.mktemp("udata-checks"), n_train=8, n_val=4, imgsz=64, video_frames=3)


@contextlib.contextmanager
def map_sizes():
    """Record the (h, w) of every map a DAttention attends over inside the block, with whether a gradient was
    being recorded (training) or not (validation / prediction), and the batch size."""
    seen = []
    forward = DAttention.forward

    def recording(self, x):
        seen.append((tuple(x.shape[-2:]), torch.is_grad_enabled(), x.shape[0]))
        return forward(self, x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DAttention, "forward", recording)
        yield seen


def yolo_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`python scripts/yolo.py args...` in a fresh Python with internet sockets blocked (tests/netguard)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(cwd / "net.log")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "yolo.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert lines[0].startswith("error: yolov5-dattn yolo: ")
    return lines[0][len("error: yolov5-dattn yolo: "):]


@pytest.fixture(scope="module")
def trained_fixed(cfgs, data, tmp_path_factory, network_attempts) -> dict:
    """fixed_pe [2, 2] trained 1 epoch at its imgsz 64, asked for rect=True and multi_scale=0.5; returns the run
    folder and the maps the attention saw during training and the epoch-end validation."""
    project = tmp_path_factory.mktemp("fixed-train")
    model = YOLO(str(cfgs["fixed2"]))
    fmap_checks.attention_sites(model.model)  # the check's probe forward, before recording
    with map_sizes() as seen:
        model.train(data=str(data["det_yaml"]), epochs=1, imgsz=64, batch=4, rect=True, multi_scale=0.5,
                    project=str(project), name="fx", **RUN)
    assert network_attempts == []
    return {"run": project / "fx", "seen": seen}


# ---- fixed_pe at the wrong size: refused before the run folder ---------------------------------------------
def test_cli_refuses_fixed_pe_at_the_wrong_imgsz_before_the_run_folder(cfgs, data, tmp_path):
    result = yolo_cli("train", f"model={cfgs['fixed20']}", f"data={data['det_yaml']}", "imgsz=160", "epochs=1",
                      "device=cpu", f"project={tmp_path / 'runs'}", "name=x", cwd=tmp_path)
    assert one_error_line(result) == WRONG_20_AT_160
    assert not (tmp_path / "runs").exists() and not (tmp_path / "net.log").exists()


@pytest.mark.parametrize("mode", ["train", "val", "predict"])
def test_python_api_refuses_fixed_pe_at_the_wrong_imgsz_before_the_run_folder(mode, cfgs, data, tmp_path):
    model = YOLO(str(cfgs["fixed20"]))
    call = {"train": lambda: model.train(data=str(data["det_yaml"]), epochs=1, imgsz=160, **kw),
            "val": lambda: model.val(data=str(data["det_yaml"]), imgsz=160, **kw),
            "predict": lambda: model.predict(str(data["val_images"]), imgsz=160, save=True, **kw)}[mode]
    kw = dict(project=str(tmp_path / "runs"), name="x", device="cpu", verbose=False)
    with pytest.raises(FeatureMapError) as e:
        call()
    assert isinstance(e.value, UserError)
    assert str(e.value) == WRONG_20_AT_160
    assert not (tmp_path / "runs").exists()


def test_imgsz_rounded_by_ultralytics_is_what_is_checked(cfgs, data):
    model = YOLO(str(cfgs["fixed2"]))
    with pytest.raises(FeatureMapError, match=r"but imgsz=70 \(rounded to 96\) gives 3x3: use imgsz=64 or set "
                                              r"q_size \[3, 3\]"):
        model.train(imgsz=70, data=str(data["det_yaml"]))  # a good dataset: the map check refuses
    # predict takes [h, w]; both sides must give the declared map
    with pytest.raises(FeatureMapError, match=r"imgsz=\[64, 128\] gives 2x4: use imgsz=64"):
        model.predict(torch.zeros(1, 3, 64, 128), imgsz=[64, 128])


# ---- fixed_pe at its size: trains, with square batches everywhere -------------------------------------------
def test_fixed_pe_at_its_imgsz_trains_with_rect_and_multiscale_off_and_square_validation(trained_fixed):
    run = trained_fixed["run"]
    assert (run / "weights" / "best.pt").is_file()
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["rect"] is False and args["multi_scale"] == 0.0  # switched off by the check
    # batches of 4 (train) and 8 (val); single images are ultralytics' own probes (stride at 256 px, GFLOPs at 640)
    seen = [(hw, grad) for hw, grad, batch in trained_fixed["seen"] if batch > 1]
    assert {grad for _, grad in seen} == {True, False}  # training batches and validation batches both ran
    # validation would be rectangular with half a stride of padding (64 -> 96: 3x3) without the square loader
    assert {hw for hw, *_ in seen} == {(2, 2)}
    assert fmap_checks.rect_val_long_side(64, 32) == 96


def test_fixed_pe_val_and_predict_get_square_inputs_of_exactly_imgsz(cfgs, data, tmp_path):
    fixed, dwc = YOLO(str(cfgs["fixed4"])), YOLO(str(cfgs["dwc"]))
    sizes = {}
    for name, model in (("fixed", fixed), ("dwc", dwc)):
        fmap_checks.attention_sites(model.model)
        with map_sizes() as seen:
            model.val(data=str(data["det_yaml"]), imgsz=128, batch=4, project=str(tmp_path), name=f"v{name}", **RUN)
        sizes[f"val {name}"] = {hw for hw, _, batch in seen if batch > 1}  # 1: the GFLOPs probe at 640
        with map_sizes() as seen:  # the video is 64 high, 96 wide: letterboxed to 96x128 unless forced square
            list(model.predict(str(data["video"]), stream=True, imgsz=128, project=str(tmp_path), name=f"p{name}",
                               **RUN))
        sizes[f"predict {name}"] = {hw for hw, *_ in seen}
    assert sizes == {"val fixed": {(4, 4)}, "predict fixed": {(4, 4)},
                     "val dwc": {(5, 5)}, "predict dwc": {(3, 4)}}  # dwc_pe: ultralytics' rectangles, unchanged


def test_cli_refuses_a_fixed_pe_checkpoint_at_another_imgsz(trained_fixed, data, tmp_path):
    best = trained_fixed["run"] / "weights" / "best.pt"
    result = yolo_cli("predict", f"model={best}", f"source={data['val_images']}", "imgsz=96", "device=cpu",
                      f"project={tmp_path / 'runs'}", "name=p", "save=True", cwd=tmp_path)
    assert one_error_line(result) == ("model.8.m.0.m.0.attention (fixed_pe) is declared for 2x2 (imgsz=64) but "
                                      "imgsz=96 gives 3x3: use imgsz=64: the size its fixed_pe table was built for")
    assert not (tmp_path / "runs").exists()


def test_export_of_a_fixed_pe_checkpoint_refuses_dynamic_and_another_imgsz(trained_fixed, tmp_path):
    import shutil
    best = Path(shutil.copy(trained_fixed["run"] / "weights" / "best.pt", tmp_path / "best.pt"))
    model = YOLO(str(best))
    with pytest.raises(FeatureMapError) as e:
        model.export(format="onnx", dynamic=True)
    assert str(e.value) == ("dynamic=True: model.8.m.0.m.0.attention uses fixed_pe and only runs at 2x2 (imgsz=64): "
                            "drop dynamic=True or use a size-free position term (dwc_pe) in the model YAML's fmapsize")
    with pytest.raises(FeatureMapError, match=r"declared for 2x2 \(imgsz=64\) but imgsz=\[64, 96\] gives 2x3"):
        model.export(format="onnx", imgsz=[64, 96])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # nothing written beside it
    # the size it was trained at passes the check (the export itself is tested in test_ultralytics_workflow)
    passed = fmap_checks.check_run(model.model, "export", {"imgsz": 64})
    assert fmap_checks.run_overrides(passed, "export") == {} and not passed.square


# ---- dwc_pe (size-free): any size runs; what it sees is said ---------------------------------------------------
def test_dwc_pe_at_another_imgsz_passes_and_says_what_it_sees(cfgs):
    model = YOLO(str(cfgs["dwc"]))
    verdict = fmap_checks.check_run(model.model, "train", {"imgsz": 160, "rect": True, "multi_scale": 0.5})
    assert fmap_checks.run_overrides(verdict, "train") == {} and not verdict.square
    assert verdict.lines[0] == ("DAttention model.8.m.0.m.0.attention: stride 32, dwc_pe, declared [20, 20] (any "
                                "size); imgsz=160 -> [5, 5]; rect: long side 5, short side by aspect; "
                                "multi_scale=0.5 [2, 2]..[8, 8]; validation (rectangular, padded): long side 6, "
                                "short side by aspect")
    assert len(verdict.lines) == 2  # both attention layers of C3k_DAttention


# ---- the rules, on one layer ------------------------------------------------------------------------------------
def _site(**kwargs) -> AttentionSite:
    return AttentionSite("layer.attention", DAttention(16, [2, 2], n_heads=2, n_groups=1, **kwargs), stride=32)


def test_fixed_pe_switches_off_what_it_cannot_follow_per_mode():
    site = _site(**FIXED)
    train = check_plan([site], Plan("train", 64, (64, 64), 32, rect=True, multi_scale=0.5, validates=True))
    assert fmap_checks.run_overrides(train, "train") == {"rect": False, "multi_scale": 0.0} and train.square
    assert list(train.lines[1:]) == [
        "rect=True switched off: layer.attention uses fixed_pe [2, 2], rectangular batches would give other sizes",
        "multi_scale=0.5 switched off: layer.attention uses fixed_pe [2, 2], multi-scale would give [1, 1]..[3, 3]",
        "validation uses square 64x64 inputs instead of ultralytics' rectangular batches (long side 96): "
        "layer.attention uses fixed_pe [2, 2]"]
    val = check_plan([site], Plan("val", 64, (64, 64), 32, rect=True, validates=True))
    assert fmap_checks.run_overrides(val, "val") == {"rect": False} and val.switch_off == ()
    predict = check_plan([site], Plan("predict", 64, (64, 64), 32, rect=True))
    assert fmap_checks.run_overrides(predict, "predict") == {"rect": False}
    rtdetr = check_plan([site], Plan("predict", 64, (64, 64), 32, rect=True, square_eval=True))
    assert fmap_checks.run_overrides(rtdetr, "predict") == {}  # RT-DETR letterboxes to exactly imgsz already
    with pytest.raises(FeatureMapError, match=r"^layer.attention \(fixed_pe\) is declared for 2x2 \(imgsz=64\) but "
                                              r"imgsz=\[64, 96\] gives 2x3: use imgsz=64: the size"):
        check_plan([site], Plan("predict", [64, 96], (64, 96), 32, checkpoint=True))


def test_maps_too_small_for_the_layer_are_refused(cfgs, data, tmp_path):
    # an offset conv whose kernel equals its stride has no padding: 4x4 cells at least
    strided = _site(stride=4, ksize=4)
    assert strided.smallest_side == 4 and _site().smallest_side == 1
    with pytest.raises(FeatureMapError, match=r"needs a feature map of at least 4x4 \(its offset network \(kernel 4, "
                                              r"stride 4\)\) but imgsz=64 gives 2x2: use imgsz=128 or more"):
        check_plan([strided], Plan("predict", 64, (64, 64), 32))
    with pytest.raises(FeatureMapError, match=r"multi_scale=0.5 goes down to 64x64 inputs"):
        check_plan([strided], Plan("train", 128, (128, 128), 32, multi_scale=0.5))
    # training on a single cell: no gradient reaches the offsets; the API refuses it before the run folder
    model = YOLO(str(cfgs["dwc"]))
    with pytest.raises(FeatureMapError, match=r"would train on a 1x1 map at imgsz=32: .* use imgsz=64 or more"):
        model.train(imgsz=32, data=str(data["det_yaml"]), project=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
    inference = fmap_checks.check_run(model.model, "val", {"imgsz": 32})  # inference on 1x1 runs
    assert fmap_checks.run_overrides(inference, "val") == {} and inference.lines


def test_ultralytics_size_arithmetic():
    assert fmap_checks.parse_imgsz("640,480") == [640, 480] and fmap_checks.parse_imgsz("[320]") == [320]
    assert fmap_checks.parse_imgsz("big") is None
    assert fmap_checks.rounded_hw([150], 32, "train") == (160, 160)
    assert fmap_checks.rounded_hw([640, 480], 32, "train") == (640, 640)  # train/val keep the largest
    assert fmap_checks.rounded_hw([480, 650], 32, "predict") == (480, 672)
    assert fmap_checks.rect_val_long_side(640, 32) == 672
    assert fmap_checks.multiscale_range(640, 32, 0.5) == (320, 960)
    assert fmap_checks.multiscale_range(64, 32, 0.9) == (32, 128)  # randrange(32, 153) // 32 * 32


# ---- layerscale in the ultralytics blocks ------------------------------------------------------------------------
@pytest.mark.parametrize("c3k", [False, True])
def test_c3k2_dattention_with_layerscale_zero_is_exactly_c3k2_at_init(c3k):
    torch.manual_seed(0)
    stock = C3k2(32, 64, 2, c3k).eval()
    ours = host.C3k2_DAttention(32, 64, 2, {"q_size": [4, 4], "layerscale": 0.0}, c3k).eval()
    result = ours.load_state_dict(stock.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(".attention." in k or k.endswith("layer_scale.gamma") for k in result.missing_keys)
    x = torch.randn(2, 32, 6, 6)
    assert torch.equal(ours(x), stock(x))
    without = host.C3k2_DAttention(32, 64, 2, [4, 4], c3k).eval()  # the recipe: attention in series
    without.load_state_dict(ours.state_dict(), strict=False)
    assert not torch.equal(without(x), stock(x))


def test_c2f_dattention_layerscale_and_the_blocks_that_refuse_it():
    torch.manual_seed(0)
    stock = C2f(32, 64, 1, True).eval()
    ours = host.C2f_DAttention(32, 64, 1, {"q_size": [4, 4], "layerscale": 0.0}, True).eval()
    ours.load_state_dict(stock.state_dict(), strict=False)
    x = torch.randn(1, 32, 4, 4)
    assert torch.equal(ours(x), stock(x))
    assert [tuple(p.shape) for n, p in ours.named_parameters() if "layer_scale" in n] == [(32,)]
    for make, block in ((lambda f: host.C2PSA_DAttention(64, 64, 1, f), "C2PSA_DAttention"),
                        (lambda f: host.AIFI_DAttention(64, 128, 8, f), "AIFI_DAttention")):
        with pytest.raises(ValueError, match=f"^{block}: layerscale is not supported"):
            make({"q_size": [4, 4], "layerscale": 0.0})
        make({"q_size": [4, 4], "layerscale": None})  # null: the placement they always have


def test_layerscale_yaml_builds_and_its_checkpoint_loads_safely(cfgs, tmp_path):
    model = YOLO(str(cfgs["ls"]))
    gammas = {k: v for k, v in model.model.state_dict().items() if k.endswith("layer_scale.gamma")}
    assert len(gammas) == 2 and all(torch.count_nonzero(v) == 0 for v in gammas.values())
    model.save(tmp_path / "ls.pt")
    loaded = YOLO(str(tmp_path / "ls.pt"))  # the restricted loader (weights_only) must know LayerScale
    assert sorted(k for k in loaded.model.state_dict() if "layer_scale" in k) == sorted(gammas)


# ---- changes / registry --host ultralytics -----------------------------------------------------------------------
def test_changes_and_registry_for_the_ultralytics_host(capsys):
    from yolov5_dattn.cli.changes import changes_main, registry_main
    # a fresh Python: only the ultralytics host installed (in this process, earlier tests installed YOLOv5's too)
    out = subprocess.run([sys.executable, "-m", "yolov5_dattn", "changes", "--host", "ultralytics"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    groups = [line for line in out.splitlines() if not line.startswith(" ")]
    from yolov5_dattn.hosts.ultralytics.changes import STEPS
    # every documented step made its changes, in the documented order: plugin steps first, then the policy
    assert groups == [f"{s.name}  ({s.kind})" for s in STEPS]
    assert [s.kind for s in STEPS] == sorted((s.kind for s in STEPS), key=["plugin", "policy"].index)
    assert "  ultralytics.nn.tasks.C3k2_DAttention: a DAttention block" in out
    assert f"  ultralytics.engine.model.Model.train: {fmap_checks.WHY}" in out
    assert changes_main(["--host", "ultralytics", "--steps"]) == 0
    steps = capsys.readouterr().out.splitlines()
    assert steps[0].split()[:2] == ["plugin", "registry"] and "(ultralytics 8.4.190 nn/tasks.py:" in steps[0]
    assert steps[1].startswith("        nn.tasks.parse_model")
    assert registry_main(["--host", "ultralytics"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"Bottleneck_DAttention", "C2f_DAttention", "C3k_DAttention", "C3k2_DAttention",
                         "C2PSA_DAttention", "AIFI_DAttention", "DAttention"}
    assert rows["C3k2_DAttention"].split()[1:4] == ["c1,", "c2", "n"]
    assert "yolov5_dattn/hosts/ultralytics/blocks.py:" in rows["C3k2_DAttention"]
    assert rows["C3k2_DAttention"].endswith("; c3k at args[4] for scales m/l/x")
    assert "yolov5_dattn/nn/dattention.py:" in rows["DAttention"] and rows["DAttention"].split()[1:3] == ["as", "is"]
