"""The one feature-map Plan/Verdict (yolov5_dattn/core/fmap_plan.py), host-free: the decisions, each host's words
for them, and that nothing it is given is changed. The hosts' own runs are in tests/yolov5/test_preflight.py and
tests/ultralytics/test_ultralytics_checks.py."""
import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolov5_dattn.core.fmap_plan import (ULTRALYTICS_FLAGS, YOLOV5_FLAGS, FeatureMapError, Flags, Plan, Verdict,
                                         check_plan, multiscale_range)
from yolov5_dattn.errors import UserError
from yolov5_dattn.nn.dattention import DAttention
from yolov5_dattn.nn.sites import AttentionSite

FIXED = {"fixed_pe": True, "dwc_pe": False}
HOSTS = {"yolov5": YOLOV5_FLAGS, "ultralytics": ULTRALYTICS_FLAGS}


def _site(name: str = "layer.attention", q_size=(2, 2), **kwargs) -> AttentionSite:
    torch.manual_seed(0)
    return AttentionSite(name, DAttention(16, list(q_size), n_heads=2, n_groups=1, **kwargs), stride=32)


# ---- each host's words ------------------------------------------------------------------------------------------
def test_yolov5_flags_are_its_command_line():
    f = YOLOV5_FLAGS
    assert f.arg("imgsz", [640]) == "--imgsz 640" and f.arg("imgsz", [640, 480]) == "--imgsz 640 480"
    assert f.arg("rect") == "--rect" and f.arg("multi_scale", 0.5) == "--multi-scale"
    assert f.arg("dynamic") == "--dynamic"
    assert f.name("rect") == "--rect" and f.name("source") == "--source" and f.host == "YOLOv5's"


def test_ultralytics_flags_are_its_keywords():
    f = ULTRALYTICS_FLAGS
    assert f.arg("imgsz", [640]) == "imgsz=640" and f.arg("imgsz", [640, 480]) == "imgsz=[640, 480]"
    assert f.arg("rect") == "rect=True" and f.arg("multi_scale", 0.5) == "multi_scale=0.5"
    assert f.arg("dynamic") == "dynamic=True" and f.name("rect") == "rect" and f.host == "ultralytics'"


def test_another_host_is_one_mapping():
    flags = Flags("Other's", {"imgsz": "--size", "rect": "--rect", "multi_scale": "--ms", "dynamic": "--dyn",
                              "source": "--input"}, switches={"rect", "dynamic"})
    verdict = check_plan([_site(**FIXED)], Plan("train", 64, (64, 64), 32, rect=True, multi_scale=0.25,
                                                validates=True), flags)
    assert verdict.lines[1].startswith("--rect switched off: layer.attention uses fixed_pe [2, 2]")
    assert verdict.lines[2].startswith("--ms 0.25 switched off")
    assert "instead of Other's rectangular batches" in verdict.lines[3]
    with pytest.raises(FeatureMapError, match=r"^layer.attention \(fixed_pe\) is declared for 2x2 \(--size 64\) but "
                                              r"--size 96 gives 3x3: use --size 64 or set q_size \[3, 3\]"):
        check_plan([_site(**FIXED)], Plan("predict", 96, (96, 96), 32), flags).accept()


@pytest.mark.parametrize("host", HOSTS)
def test_one_refusal_in_each_hosts_words(host):
    flags = HOSTS[host]
    imgsz = {"yolov5": "--imgsz {}", "ultralytics": "imgsz={}"}[host].format
    verdict = check_plan([_site(**FIXED)], Plan("train", 128, (128, 128), 32, validates=True), flags)
    assert verdict.refusals == (f"layer.attention (fixed_pe) is declared for 2x2 ({imgsz(64)}) but {imgsz(128)} gives "
                                f"4x4: use {imgsz(64)} or set q_size [4, 4] in the model YAML's fmapsize",)
    assert verdict.lines == () and verdict.switch_off == () and not verdict.square
    with pytest.raises(FeatureMapError) as e:
        verdict.accept()
    assert isinstance(e.value, UserError) and str(e.value) == verdict.refusals[0]
    # from a checkpoint, only the imgsz can change; a dynamic export is refused in the host's words too
    from_ckpt = check_plan([_site(**FIXED)], Plan("predict", [64, 96], (64, 96), 32, checkpoint=True), flags)
    assert from_ckpt.refusals[0].endswith(f"gives 2x3: use {imgsz(64)}: the size its fixed_pe table was built for")
    dynamic = check_plan([_site(**FIXED)], Plan("export", 64, (64, 64), 32, dynamic=True), flags)
    assert dynamic.refusals == (f"{flags.arg('dynamic')}: layer.attention uses fixed_pe and only runs at 2x2 "
                                f"({imgsz(64)}): drop {flags.arg('dynamic')} or use a size-free position term "
                                f"(dwc_pe) in the model YAML's fmapsize",)


# ---- the changes a fixed_pe layer needs: returned, never applied ---------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
def test_fixed_pe_training_returns_the_changes(host):
    flags = HOSTS[host]
    plan = Plan("train", 64, (64, 64), 32, rect=True, multi_scale=0.5, validates=True)
    verdict = check_plan([_site(**FIXED), _site("other.attention", **FIXED)], plan, flags)
    assert verdict.switch_off == ("rect", "multi_scale") and verdict.square and verdict.refusals == ()
    fixed = "layer.attention uses fixed_pe [2, 2]"
    assert verdict.lines == (
        "DAttention layer.attention: stride 32, fixed_pe, declared [2, 2]; runs at [2, 2] only",
        f"{flags.arg('rect')} switched off: {fixed}, rectangular batches would give other sizes",
        f"{flags.arg('multi_scale', 0.5)} switched off: {fixed}, multi-scale would give [1, 1]..[3, 3]",
        f"validation uses square 64x64 inputs instead of {flags.host} rectangular batches (long side 96): {fixed}",
        "DAttention other.attention: stride 32, fixed_pe, declared [2, 2]; runs at [2, 2] only")  # each change once


def test_square_inputs_per_mode():
    site = _site(**FIXED)
    flags = ULTRALYTICS_FLAGS
    val = check_plan([site], Plan("val", 64, (64, 64), 32, rect=True, validates=True), flags)
    predict = check_plan([site], Plan("predict", 64, (64, 64), 32, rect=True), flags)
    assert (val.square, val.switch_off, predict.square, predict.switch_off) == (True, (), True, ())
    assert predict.lines[1] == ("inference letterboxes every image to exactly 64x64 (not the minimal rectangle): "
                                "layer.attention uses fixed_pe [2, 2]")
    exactly = check_plan([site], Plan("predict", 64, (64, 64), 32, rect=True, square_eval=True), flags)
    assert not exactly.square and exactly.switch_off == ()  # RT-DETR: already exactly imgsz
    speed = check_plan([site], Plan("val", 64, (64, 64), 32, rect=True, validates=False), flags)
    assert not speed.square


def test_inputs_are_not_mutated():
    given, shapes = [128, 128], [((96, 128), 3), ((128, 128), 1)]
    sites = [_site(**FIXED, q_size=(4, 4)), _site("free.attention")]
    state = [copy.deepcopy(s.module.state_dict()) for s in sites]
    plan = Plan("predict", given, (128, 128), 32, rect=True, source_shapes=shapes)
    before = copy.deepcopy(dataclasses.asdict(plan))
    names = dict(YOLOV5_FLAGS.names)
    first = check_plan(sites, plan, YOLOV5_FLAGS)
    assert first.square and first.lines[-1].endswith("--imgsz 128 128 -> [4, 4]; --source letterboxed -> [3, 4] x3, "
                                                     "[4, 4]")
    assert check_plan(sites, plan, YOLOV5_FLAGS) == first  # the same answer again: nothing kept between calls
    assert given == [128, 128] and shapes == [((96, 128), 3), ((128, 128), 1)]
    assert dataclasses.asdict(plan) == before and dict(YOLOV5_FLAGS.names) == names
    assert all(torch.equal(a, b) for s, saved in zip(sites, state) for a, b in
               zip(s.module.state_dict().values(), saved.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.rect = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.square = False
    with pytest.raises(TypeError):
        YOLOV5_FLAGS.names["imgsz"] = "--size"


# ---- sizes ----------------------------------------------------------------------------------------------------------
def test_an_imgsz_the_host_would_round():
    free = [_site()]
    refused = check_plan(free, Plan("predict", [640, 500], (640, 500), 32, refuse_rounding=True), YOLOV5_FLAGS)
    assert refused.refusals == ("--imgsz 640 500 is not a multiple of the model's max stride 32: use --imgsz 640 512",)
    low = check_plan(free, Plan("train", 32, (32, 32), 32, refuse_rounding=True, train_floor=64), YOLOV5_FLAGS)
    assert low.refusals == ("--imgsz 32 is below YOLOv5's training minimum of 2x the max stride: use --imgsz 64 or "
                            "more",)
    assert check_plan([], Plan("val", 100, (100, 100), 32, refuse_rounding=True), YOLOV5_FLAGS).refusals  # no sites
    rounded = check_plan(free, Plan("train", 150, (160, 160), 32, validates=True), ULTRALYTICS_FLAGS)  # rounds itself
    assert rounded.refusals == () and rounded.lines[0].endswith("(any size); imgsz=150 (rounded to 160) -> [5, 5]; "
                                                                "validation (rectangular, padded): long side 6, short "
                                                                "side by aspect")


def test_maps_too_small_and_every_site_refused():
    strided = _site(stride=4, ksize=4)  # kernel = stride: no padding, at least 4x4 cells
    verdict = check_plan([strided, _site("b.attention", stride=4, ksize=4)], Plan("predict", 64, (64, 64), 32),
                         YOLOV5_FLAGS)
    assert verdict.refusals == tuple(f"{n} (dwc_pe) needs a feature map of at least 4x4 (its offset network (kernel 4, "
                                     f"stride 4)) but --imgsz 64 gives 2x2: use --imgsz 128 or more"
                                     for n in ("layer.attention", "b.attention"))
    single = check_plan([_site()], Plan("train", 32, (32, 32), 32), ULTRALYTICS_FLAGS)
    assert single.refusals[0].startswith("layer.attention (dwc_pe) would train on a 1x1 map at imgsz=32:")
    assert check_plan([_site()], Plan("val", 32, (32, 32), 32), ULTRALYTICS_FLAGS).refusals == ()  # inference runs


def test_size_free_layers_say_what_they_see():
    verdict = check_plan([_site()], Plan("train", 640, (640, 640), 32, rect=True, multi_scale=0.5, validates=True),
                         YOLOV5_FLAGS)
    assert verdict == Verdict(lines=("DAttention layer.attention: stride 32, dwc_pe, declared [2, 2] (any size); "
                                     "--imgsz 640 -> [20, 20]; --rect: long side 20, short side by aspect; "
                                     "--multi-scale [10, 10]..[30, 30]; validation (rectangular, padded): long side "
                                     "21, short side by aspect",))
    stream = check_plan([_site()], Plan("predict", [128, 96], (128, 96), 32, rect=True), ULTRALYTICS_FLAGS)
    assert stream.lines[0].endswith("imgsz=[128, 96] -> up to [4, 3] (letterboxed, short side by aspect)")
    assert multiscale_range(640, 32, 0.5) == (320, 960) and multiscale_range(64, 32, 0.9) == (32, 128)


def test_the_plan_imports_no_host():
    code = ("import sys\nfrom yolov5_dattn.core import fmap_plan\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('yolov5', 'ultralytics')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
