"""scripts/visualize_attention.py on a model trained briefly on the demo data: the points it writes are
where the module sampled, mapped through the letterbox to image pixels, and the images are written."""
import json
import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_forwards import recorded_attention

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "visualize_attention.py"
IMGSZ = 160  # P5 map 5x5
QUERY = (20.0, 15.0)
W, H = 64, 48  # the test image: letterboxed to 160 it is scaled 2.5x and padded 20 px top and bottom
DRAW = 2  # --draw-scale


@pytest.fixture(scope="module")
def weights(trained_det) -> Path:
    """conftest's session-wide yolov5n_c3_dattn run, trained 1 epoch on the demo data."""
    return trained_det / "weights" / "last.pt"


@pytest.fixture(scope="module")
def visualize():
    return runpy.run_path(str(SCRIPT), run_name="visualize_attention")["main"]


@pytest.fixture(scope="module")
def image(demo, tmp_path_factory) -> Path:
    """A W x H crop of a demo image: not square, so the letterbox pads top and bottom."""
    val = sorted(Path(demo["det_yaml"]).parent.glob("det/images/val/*.png"))[0]
    path = tmp_path_factory.mktemp("viz_src") / "crop.png"
    img = cv2.imread(str(val))
    assert img.shape[:2] == (64, 64)
    cv2.imwrite(str(path), img[8:8 + H, :W])
    return path


def strs(*args):
    return [str(a) for a in args]


def module_positions(weights: Path, img: np.ndarray):
    """The DAttention's own recorded positions and attention for `img`, letterboxed as YOLOv5 does."""
    return recorded_attention(weights, img, IMGSZ)


def to_pixels(coords: np.ndarray, H: int, W: int, h: int, w: int) -> np.ndarray:
    """Normalised (y, x) on an HxW map of a 160x160 letterboxed input -> (x, y) pixels of the h x w image.

    Written out long-hand on purpose (not the module's helpers): cell c of a map at stride s covers
    input pixels [c*s, (c+1)*s); align_corners=True puts -1/+1 at the first/last cell centre.
    """
    scale = min(IMGSZ / h, IMGSZ / w)
    new_w, new_h = round(w * scale), round(h * scale)
    left, top = round((IMGSZ - new_w) / 2 - 0.1), round((IMGSZ - new_h) / 2 - 0.1)
    cx = (coords[..., 1] + 1) / 2 * (W - 1)
    cy = (coords[..., 0] + 1) / 2 * (H - 1)
    x_in, y_in = (cx + 0.5) * (IMGSZ / W), (cy + 0.5) * (IMGSZ / H)
    return np.stack([(x_in - left) * w / new_w - 0.5, (y_in - top) * h / new_h - 0.5], -1)


def test_json_points_are_the_module_positions(weights, visualize, image, tmp_path):
    status = visualize(strs("--weights", weights, "--source", image, "--imgsz", IMGSZ, "--query",
                            f"{QUERY[0]:g},{QUERY[1]:g}", "--draw-scale", DRAW, "--project", tmp_path,
                            "--name", "viz", "--conf-thres", 0.001))
    assert status == 0
    out = tmp_path / "viz"
    result = json.loads((out / "crop.json").read_text())
    assert result["image_hw"] == [H, W]
    assert result["letterbox"] == {"input_hw": [160, 160], "scale_xy": [2.5, 2.5], "pad_xy": [0, 20]}

    img = cv2.imread(str(image))
    m, rec = module_positions(weights, img)
    (layer,) = result["layers"]
    Hm, Wm = layer["map_hw"]
    assert (Hm, Wm) == (IMGSZ // 32, IMGSZ // 32) and layer["name"] == "model.8.m.0.attention"
    assert len(layer["groups"]) == m.n_groups
    pos, ref = rec["pos"][0].double().numpy(), rec["reference"][0].double().numpy()
    for g, group in enumerate(layer["groups"]):
        np.testing.assert_allclose(group["sampling"], to_pixels(pos[g], Hm, Wm, H, W).reshape(-1, 2), atol=2e-3)
        np.testing.assert_allclose(group["reference"], to_pixels(ref[g], Hm, Wm, H, W).reshape(-1, 2), atol=2e-3)
    # the module did deform: sampling points are not the reference grid
    assert np.abs(pos - ref).max() > 1e-4

    # Fig. 7: the query pixel's cell and its attention, averaged over each group's heads
    row = int((QUERY[1] + 0.5) * 2.5 + 20) // 32
    col = int((QUERY[0] + 0.5) * 2.5) // 32
    assert layer["query"]["cell"] == [row, col]
    attn = rec["attn"][0].double()  # (heads, HW, Ns)
    per_group = attn[:, row * Wm + col].reshape(m.n_groups, -1, attn.shape[-1]).mean(1)
    np.testing.assert_allclose(layer["query"]["weight"], per_group.numpy(), atol=2e-6)
    np.testing.assert_allclose(np.sum(layer["query"]["weight"], 1), 1.0, atol=1e-4)

    # the PNGs are written at --draw-scale, and the last group's dots are drawn where the JSON says
    points = cv2.imread(str(out / "crop_layer0_points.png"))
    query = cv2.imread(str(out / "crop_layer0_query.png"))
    assert points.shape == query.shape == (H * DRAW, W * DRAW, 3)
    from yolov5_dattn.analysis.attention_viz import GROUP_COLOURS
    last = layer["groups"][-1]
    drawn_at = [(round((x + 0.5) * DRAW - 0.5), round((y + 0.5) * DRAW - 0.5)) for x, y in last["sampling"]]
    hits = [tuple(points[y, x]) == GROUP_COLOURS[last["group"]]
            for x, y in drawn_at if 0 <= x < W * DRAW and 0 <= y < H * DRAW]
    assert len(hits) >= 5 and np.mean(hits) >= 0.6
    assert len(result["detections"]) > 0  # at --conf-thres 0.001 even a barely trained model detects



def test_detections_come_from_the_ordinary_forward(weights, image):
    """The detections are those of the forward val and detect run (`record` off: the fused attention kernel), on
    the letterboxed image; the recording runs each layer alone afterwards, on that forward's input to it."""
    from yolov5.utils.general import non_max_suppression

    from kernel_choice import chosen_kernels
    from model_forwards import watch
    from yolov5_dattn.analysis.attention_viz import analyse, dattention_layers
    from yolov5_dattn.hosts.yolov5.checkpoints import check_model_checkpoint
    model = check_model_checkpoint(weights).float().eval()
    layers = dattention_layers(model)
    with chosen_kernels() as chosen:
        runs = watch(model, chosen)
        result = analyse(model, cv2.imread(str(image)), IMGSZ, layers, conf_thres=0.001)
        assert len(runs) == 1  # one forward of the whole model
        with torch.no_grad():
            model(runs[0]["input"])  # the same input, the model as val runs it
    run, plain = runs
    assert run["input"].shape == (1, 3, IMGSZ, IMGSZ)
    assert run["kernels"] == plain["kernels"] and len(run["kernels"]) == len(layers) == 1
    assert "explicit" not in run["kernels"]  # the recording path is not the one that detects
    torch.testing.assert_close(run["out"], plain["out"], rtol=1e-5, atol=1e-4)

    # NMS of the plain forward, mapped long-hand to the image (scaled 2.5x, 20 px of padding above), against the
    # JSON's detections where they are stable: those with at least half the top confidence (below, a barely
    # trained model ties scores, and which tied box NMS keeps is its implementation's choice)
    det = non_max_suppression(plain["out"], 0.001, 0.45)[0].tolist()
    theirs = [{"xyxy": np.clip([x0 / 2.5, (y0 - 20) / 2.5, x1 / 2.5, (y1 - 20) / 2.5], 0, [W, H, W, H]),
               "conf": conf, "cls": int(cls)} for x0, y0, x1, y1, conf, cls in det]
    ours = result["detections"]
    assert ours and theirs
    for mine, other in ((ours, theirs), (theirs, ours)):
        for d in (d for d in mine if d["conf"] >= mine[0]["conf"] / 2):
            assert any(o["cls"] == d["cls"] and abs(o["conf"] - d["conf"]) < 1e-3
                       and np.abs(np.subtract(o["xyxy"], d["xyxy"])).max() < 0.05 for o in other), (d, other)


def test_video_writes_mp4_and_frames(demo, weights, visualize, tmp_path):
    video = demo["video"]
    status = visualize(strs("--weights", weights, "--source", video, "--imgsz", IMGSZ, "--max-frames", 2,
                            "--group", 1, "--project", tmp_path, "--name", "vid"))
    assert status == 0
    out = tmp_path / "vid"
    stem = Path(video).stem
    frames = json.loads((out / f"{stem}.json").read_text())["frames"]
    assert [f["frame"] for f in frames] == [0, 1]
    for kind in ("points", "query"):
        capture = cv2.VideoCapture(str(out / f"{stem}_layer0_{kind}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
        capture.release()


@pytest.mark.parametrize("args, message", [
    (["--query", "12"], "--query '12' is not x,y"),
    (["--source", "nowhere.png"], "--source nowhere.png not found"),
    (["--layer", "3"], "--layer 3 is out of range: this model has 1 DAttention layer(s)"),
    (["--group", "9"], "--group 9 is out of range"),
])
def test_bad_input_is_one_line(weights, visualize, image, tmp_path, capsys, args, message):
    opts = {"--weights": weights, "--source": image, "--project": tmp_path, "--name": "bad",
            **dict(zip(args[::2], args[1::2]))}
    assert visualize([str(x) for item in opts.items() for x in item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "bad").exists()  # nothing half-written
