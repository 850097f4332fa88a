"""The synthetic demo dataset: deterministic, labels that match the pixels, YAMLs YOLOv5 accepts, a video."""
import hashlib

import cv2
import numpy as np
import pytest

from conftest import load_script
from yolov5_dattn.demo_data import CLASSES, make_demo_data

SMALL = dict(n_train=6, n_val=3, imgsz=64, video_frames=5)


def _digest(root):
    """sha256 of every file under root except the YAMLs (they name root, which differs between calls)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".yaml"}


def _labels(path):
    return [list(map(float, line.split())) for line in path.read_text().splitlines() if line.strip()]


def test_same_arguments_same_files_and_seed_changes_them(tmp_path):
    a = make_demo_data(tmp_path / "a", **SMALL)
    b = make_demo_data(tmp_path / "b", **SMALL)
    c = make_demo_data(tmp_path / "c", **SMALL, seed=1)
    da, db, dc = _digest(a["root"]), _digest(b["root"]), _digest(c["root"])
    assert da == db
    assert len(da) == 2 * 2 * (6 + 3) + 2  # det+seg × images+labels × images, video, settings.json
    assert da["det/images/val/val_00000.png"] != dc["det/images/val/val_00000.png"]


def test_val_split_does_not_depend_on_train_size(tmp_path):
    a = make_demo_data(tmp_path / "a", **{**SMALL, "n_train": 2}, video=False)
    b = make_demo_data(tmp_path / "b", **{**SMALL, "n_train": 9}, video=False)
    for name in ("det/images/val/val_00002.png", "seg/labels/val/val_00002.txt"):
        assert (a["root"] / name).read_bytes() == (b["root"] / name).read_bytes()


def test_labels_match_the_drawn_shapes(tmp_path):
    out = make_demo_data(tmp_path, n_train=2, n_val=12, imgsz=96, video=False)
    seg_labels = out["root"] / "seg" / "labels" / "val"
    for image in sorted(out["val_images"].glob("*.png")):
        img = cv2.imread(str(image))
        assert img.shape == (96, 96, 3)
        boxes = _labels(out["root"] / "det" / "labels" / "val" / f"{image.stem}.txt")
        polygons = _labels(seg_labels / f"{image.stem}.txt")
        assert 1 <= len(boxes) == len(polygons) <= 4
        for box, poly in zip(boxes, polygons):
            assert box[0] == poly[0] and int(box[0]) in range(len(CLASSES))
            xy = np.array(poly[1:]).reshape(-1, 2)
            assert len(xy) in (3, 4, 32)  # triangle, square, circle
            assert ((xy >= 0) & (xy <= 1)).all()
            # the YOLO box is the polygon's bounding box
            (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
            np.testing.assert_allclose(box[1:], [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], atol=2e-6)
            # inside the polygon (shrunk 2 px past the anti-aliased edge) the fill is one flat colour,
            # while the background carries noise: the label sits exactly on the drawn shape
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round(xy * 96).astype(np.int32)], 1)
            mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
            if mask.sum() >= 4:
                assert img[mask.astype(bool)].std(0).max() < 1.0
        assert img.std(axis=(0, 1)).max() > 3.0  # not a blank image


def test_yamls_load_in_yolov5_and_video_is_letterboxed(tmp_path):
    from yolov5.utils.general import check_dataset
    out = make_demo_data(tmp_path, **SMALL)
    for key, kind in (("det_yaml", "det"), ("seg_yaml", "seg")):
        data = check_dataset(str(out[key]))
        assert data["nc"] == 3 and data["names"] == dict(enumerate(CLASSES))
        assert data["val"] == str(out["root"] / kind / "images" / "val")
        assert len(list((out["root"] / kind / "images" / "train").glob("*.png"))) == 6
    cap = cv2.VideoCapture(str(out["video"]))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (64, 96, 3)  # 1.5:1, so inference letterboxes it
        frames += 1
    cap.release()
    assert frames == 5


def test_regenerating_replaces_old_files(tmp_path):
    make_demo_data(tmp_path, **{**SMALL, "n_val": 5}, video=False)
    out = make_demo_data(tmp_path, **SMALL, video=False)
    assert len(list(out["val_images"].iterdir())) == 3
    assert out["video"] is None and not (tmp_path / "video").exists()
    assert not list(tmp_path.glob(".demo_data-*"))  # no temporary folder left behind


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_train"):
        make_demo_data("unused", n_train=0)


def test_cli_writes_data_and_rejects_bad_flags(tmp_path, capsys):
    cli = load_script("make_demo_data.py")

    assert cli.main(["--root", str(tmp_path / "d"), "--n-train", "2", "--n-val", "1", "--imgsz", "32",
                     "--no-video"]) == 0
    assert (tmp_path / "d" / "shapes_det.yaml").is_file()
    assert len(list((tmp_path / "d" / "det" / "images" / "train").glob("*.png"))) == 2

    assert cli.main(["--root", str(tmp_path / "p"), "--n-train", "1", "--n-val", "1", "--imgsz", "96",
                     "--no-video", "--preset", "dense"]) == 0
    assert "preset dense" in capsys.readouterr().out
    assert len(_labels(tmp_path / "p" / "det" / "labels" / "val" / "val_00000.txt")) >= 10
    assert cli.main(["--root", str(tmp_path / "q"), "--preset", "sparse"]) == 2
    assert capsys.readouterr().err == "error: --preset sparse is unknown: use --preset shapes or --preset dense\n"
    assert not (tmp_path / "q").exists()

    assert cli.main(["--root", str(tmp_path / "e"), "--imgsz", "16"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --imgsz 16 is too small: use --imgsz 32 or more\n"
    assert not (tmp_path / "e").exists()


def test_demo_reads_map50_from_val_output():
    demo = load_script("demo.py")
    output = ("                 Class     Images  Instances          P          R      mAP50   mAP50-95: 100%|\n"
              "                   all         64        149      0.712      0.655      0.734      0.391\n"
              "                circle         64         42      0.801      0.702      0.811      0.455\n")
    assert demo.parse_map50(output) == 0.734
    with pytest.raises(ValueError):
        demo.parse_map50("no table here")
    assert demo.main(["--imgsz", "100"]) == 2  # refused before any step runs


def _object_free_tile_std(img, boxes, tile=16):
    """Per-channel pixel std (averaged) of each tile×tile tile that no label box (padded 2 px) touches."""
    h, w = img.shape[:2]
    free = np.ones((h, w), bool)
    for _, cx, cy, bw, bh in boxes:
        x0, x1 = int((cx - bw / 2) * w) - 2, int(np.ceil((cx + bw / 2) * w)) + 2
        y0, y1 = int((cy - bh / 2) * h) - 2, int(np.ceil((cy + bh / 2) * h)) + 2
        free[max(y0, 0):y1, max(x0, 0):x1] = False
    return [img[y:y + tile, x:x + tile].astype(np.float32).std(axis=(0, 1)).mean()
            for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)
            if free[y:y + tile, x:x + tile].all()]


def test_dense_preset_is_deterministic_and_leaves_the_default_alone(tmp_path):
    small = dict(n_train=3, n_val=2, imgsz=96, video=False)
    a = make_demo_data(tmp_path / "a", **small, preset="dense")
    b = make_demo_data(tmp_path / "b", **small, preset="dense")
    c = make_demo_data(tmp_path / "c", **small, preset="dense", seed=1)
    shapes = make_demo_data(tmp_path / "s", **small)
    da, db, dc, ds = (_digest(x["root"]) for x in (a, b, c, shapes))
    assert da == db and len(da) == 2 * 2 * (3 + 2) + 1
    assert da["det/images/val/val_00001.png"] != dc["det/images/val/val_00001.png"]
    assert da["det/images/val/val_00001.png"] != ds["det/images/val/val_00001.png"]
    assert "preset dense" in (a["root"] / "shapes_det.yaml").read_text()
    with pytest.raises(ValueError, match="unknown preset 'sparse'"):
        make_demo_data(tmp_path / "x", **small, preset="sparse")
    assert not (tmp_path / "x").exists()


def test_dense_preset_has_many_small_exact_labels_on_textured_background(tmp_path):
    size = 160
    out = make_demo_data(tmp_path, n_train=1, n_val=10, imgsz=size, video=False, preset="dense")
    counts, sides, dense_tiles = [], [], []
    for image in sorted(out["val_images"].glob("*.png")):
        img = cv2.imread(str(image))
        boxes = _labels(out["root"] / "det" / "labels" / "val" / f"{image.stem}.txt")
        polygons = _labels(out["root"] / "seg" / "labels" / "val" / f"{image.stem}.txt")
        assert len(boxes) == len(polygons)
        counts.append(len(boxes))
        for box, poly in zip(boxes, polygons):
            cls, cx, cy, bw, bh = box
            assert box[0] == poly[0] and int(cls) in range(len(CLASSES))
            # every box lies inside the image
            assert 0 <= cx - bw / 2 and cx + bw / 2 <= 1 and 0 <= cy - bh / 2 and cy + bh / 2 <= 1
            xy = np.array(poly[1:]).reshape(-1, 2)
            (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
            np.testing.assert_allclose(box[1:], [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], atol=2e-6)
            sides.append(max(bw, bh))
            # the shape is drawn over the clutter: its interior is one flat colour
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round(xy * size).astype(np.int32)], 1)
            mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
            if mask.sum() >= 4:
                assert img[mask.astype(bool)].std(0).max() < 1.0
        dense_tiles += _object_free_tile_std(img, boxes)
    assert np.mean(counts) >= 15 and min(counts) >= 10
    assert np.median(sides) < 0.08 and min(sides) * size >= 5  # small, but a few pixels at least
    # texture: the object-free parts of the image vary within 16 px tiles, unlike the default preset's gradient
    default = make_demo_data(tmp_path / "default", n_train=1, n_val=10, imgsz=size, video=False)
    default_tiles = []
    for image in sorted(default["val_images"].glob("*.png")):
        default_tiles += _object_free_tile_std(
            cv2.imread(str(image)), _labels(default["root"] / "det" / "labels" / "val" / f"{image.stem}.txt"))
    assert len(dense_tiles) >= 100 and np.median(dense_tiles) > 12.0
    assert np.median(default_tiles) < 8.0
