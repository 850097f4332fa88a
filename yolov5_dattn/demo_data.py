"""A deterministic synthetic dataset for the demo and the tests: coloured shapes on textured backgrounds.

Three classes (circle, square, triangle) in random sizes and rotations, never overlapping, so every
label is exact: YOLO boxes for detection, polygons for segmentation. Each class also has its own colour
family (reds, greens, blues; hue, saturation and brightness vary) on a greyish background: with only
shape to go by, yolov5n learns the classes too slowly for a demo of a few CPU minutes; with shape and colour
it learns them in that time. A short video of moving shapes exercises letterboxed video inference. Everything depends only on `seed` (each image has its own
random stream, so changing `n_train` does not change the val split).
That is the default preset, "shapes"; the "dense" preset (many small shapes on cluttered, textured
backgrounds, for ablations where attention has something to do) is in `demo_dense.py`.

Layout under `root`:
    det/images/{train,val}/*.png   det/labels/{train,val}/*.txt   (class cx cy w h, normalised)
    seg/images/{train,val}/*.png   seg/labels/{train,val}/*.txt   (class x1 y1 x2 y2 ..., normalised)
    shapes_det.yaml  shapes_seg.yaml  (absolute `path:`, so YOLOv5 finds them from anywhere)
    video/shapes.mp4
"""
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import cv2
import numpy as np
import yaml

__all__ = ("CLASSES", "PRESETS", "shape_polygon", "class_colour", "place_shapes", "draw_shapes", "render_image",
           "box_label", "polygon_label", "make_demo_data")

CLASSES = ("circle", "square", "triangle")
PRESETS = ("shapes", "dense")  # make_demo_data's presets; "shapes" is the default
CIRCLE_VERTICES = 32  # a multiple of 4, so the polygon touches the circle's bounding box exactly
SPLITS = {"train": 0, "val": 1}
CLASS_HUES = (0, 60, 120)  # OpenCV hue (0-179) at the centre of each class's colour family
HUE_JITTER = 12
RADIUS = (0.09, 0.2)  # circumradius range, as a fraction of the image's short side
MAX_OBJECTS = 4

Polygon = np.ndarray  # (k, 2) float pixel coordinates (x, y)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth two-colour gradient plus mild noise, so the model cannot key on a flat background.

    Returns: (h, w, 3) uint8 BGR.
    """
    grey_a, grey_b = rng.uniform(50, 200, 2)
    a, b = grey_a + rng.uniform(-20, 20, 3), grey_b + rng.uniform(-20, 20, 3)  # low saturation
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1) + 1.0) / 3.0
    img = a + (b - a) * np.clip(t, 0, 1)[..., None]
    img += rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> Polygon:
    """Vertices of shape `cls` (index into CLASSES) centred at (cx, cy) with circumradius r.

    Returns: (k, 2) float (x, y) pixel coordinates.
    """
    name = CLASSES[cls]
    if name == "circle":
        k, angle = CIRCLE_VERTICES, 0.0
    elif name == "square":
        k = 4
    elif name == "triangle":
        k = 3
    else:  # pragma: no cover - CLASSES and this function change together
        raise ValueError(f"unknown shape class {cls}")
    t = angle + np.arange(k) * 2 * math.pi / k
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1)


def class_colour(rng: np.random.Generator, cls: int) -> Tuple[int, int, int]:
    """A random BGR colour of class `cls`'s family: hue within ±HUE_JITTER of its centre, saturated."""
    hue = (CLASS_HUES[cls] + rng.integers(-HUE_JITTER, HUE_JITTER + 1)) % 180
    hsv = np.array([[[hue, rng.integers(150, 256), rng.integers(120, 256)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def place_shapes(rng: np.random.Generator, h: int, w: int, n: int, radius: Tuple[float, float] = RADIUS,
                 min_radius_px: float = 0.0) -> List[Tuple[int, Polygon]]:
    """Up to n shapes with disjoint (padded) bounding boxes, each fully inside the image.

    Args: radius: circumradius range as a fraction of the short side (at least `min_radius_px` pixels).
    Returns: [(class, polygon (k, 2) pixel x, y), ...].
    """
    placed, boxes = [], []
    short = min(h, w)
    for _ in range(n * 20):
        if len(placed) == n:
            break
        cls = int(rng.integers(len(CLASSES)))
        r = max(rng.uniform(*radius) * short, min_radius_px)
        cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
        poly = shape_polygon(cls, cx, cy, r, rng.uniform(0, 2 * math.pi))
        x0, y0 = poly.min(0) - 2
        x1, y1 = poly.max(0) + 2
        if any(x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1 for bx0, by0, bx1, by1 in boxes):
            continue
        boxes.append((x0, y0, x1, y1))
        placed.append((cls, poly))
    return placed


def draw_shapes(img: np.ndarray, rng: np.random.Generator, shapes: List[Tuple[int, Polygon]]) -> None:
    """Fill each polygon in place, with sub-pixel precision so masks match the labels."""
    shift = 4
    for cls, poly in shapes:
        colour = class_colour(rng, cls)
        pts = np.round(poly * (1 << shift)).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA, shift=shift)


def render_image(seed: int, split: str, index: int, h: int, w: int,
                 max_objects: int = MAX_OBJECTS) -> Tuple[np.ndarray, List[Tuple[int, Polygon]]]:
    """Render one image of the dataset; depends only on (seed, split, index, h, w, max_objects).

    Returns: image (h, w, 3) uint8 BGR, and [(class, polygon (k, 2) pixel x, y), ...].
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    img = _background(rng, h, w)
    shapes = place_shapes(rng, h, w, int(rng.integers(1, max_objects + 1)))
    draw_shapes(img, rng, shapes)
    return img, shapes


def box_label(cls: int, poly: Polygon, h: int, w: int) -> str:
    """YOLO detection label line: `class cx cy w h`, normalised to [0, 1]."""
    (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
    return f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"


def polygon_label(cls: int, poly: Polygon, h: int, w: int) -> str:
    """YOLO segmentation label line: `class x1 y1 x2 y2 ...`, normalised to [0, 1]."""
    xy = np.clip(poly / np.array([w, h]), 0, 1).reshape(-1)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in xy)


def _write_video(path: Path, seed: int, h: int, w: int, frames: int, fps: int) -> None:
    """Shapes gliding across a fixed background; every frame is written (mp4v)."""
    rng = np.random.default_rng([seed, 2, 0])
    background = _background(rng, h, w)
    shapes = place_shapes(rng, h, w, 3)
    colours = [class_colour(rng, cls) for cls, _ in shapes]
    velocity = rng.uniform(-1, 1, (len(shapes), 2)) * min(h, w) / frames
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    try:
        for f in range(frames):
            frame = background.copy()
            for (cls, poly), v, colour in zip(shapes, velocity, colours):
                moved = poly + v * f
                lo, hi = moved.min(0), moved.max(0)
                moved = moved - np.minimum(lo, 0) - np.maximum(hi - [w - 1, h - 1], 0)  # stay inside
                pts = np.round(moved * 16).astype(np.int32)
                cv2.fillPoly(frame, [pts], colour, lineType=cv2.LINE_AA, shift=4)
            writer.write(frame)
    finally:
        writer.release()


def _renderer(preset: str) -> Callable[[int, str, int, int, int], Tuple[np.ndarray, List[Tuple[int, Polygon]]]]:
    """render(seed, split, index, h, w) of a preset."""
    if preset == "shapes":
        return render_image
    if preset == "dense":
        from .demo_dense import render_dense_image  # it builds on this module's shapes and colours
        return render_dense_image
    raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")


def _write_split(root: Path, split: str, n: int, seed: int, imgsz: int, preset: str = "shapes") -> None:
    for kind in ("det", "seg"):
        for sub in ("images", "labels"):
            (root / kind / sub / split).mkdir(parents=True, exist_ok=True)
    render = _renderer(preset)
    for i in range(n):
        img, shapes = render(seed, split, i, imgsz, imgsz)
        name = f"{split}_{i:05d}"
        ok, png = cv2.imencode(".png", img)
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
            raise RuntimeError("OpenCV failed to encode PNG")
        for kind, label in (("det", box_label), ("seg", polygon_label)):
            (root / kind / "images" / split / f"{name}.png").write_bytes(png.tobytes())
            lines = [label(c, p, imgsz, imgsz) for c, p in shapes]
            (root / kind / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")


def _data_yaml(path: Path, dataset: Path, preset: str = "shapes") -> None:
    data = {"path": str(dataset), "train": "images/train", "val": "images/val",
            "names": dict(enumerate(CLASSES))}
    what = "synthetic shapes" if preset == "shapes" else f"synthetic shapes, preset {preset}"
    path.write_text(f"# written by yolov5_dattn.demo_data ({what})\n" + yaml.safe_dump(data, sort_keys=False))


def make_demo_data(root: Union[str, Path], n_train: int = 256, n_val: int = 64, imgsz: int = 128, seed: int = 0,
                   video: bool = True, video_frames: int = 30, fps: int = 10,
                   preset: str = "shapes") -> Dict[str, Path]:
    """Write the synthetic detection + segmentation dataset, its data YAMLs and a video under `root`.

    Args:
        root: output folder (created; the generated sub-folders are replaced as a whole).
        n_train, n_val: images per split (square, imgsz × imgsz PNG, 1-4 shapes each).
        imgsz: image side in pixels.
        seed: everything written depends only on the arguments.
        video: also write `video/shapes.mp4`, imgsz high and 1.5·imgsz wide (so it is letterboxed).
        video_frames, fps: video length.
        preset: "shapes" (1-4 large shapes on a smooth gradient) or "dense" (18-32 small shapes on cluttered,
            textured backgrounds: `demo_dense`); the video is the same in both.
    Returns:
        {"root", "det_yaml", "seg_yaml", "val_images", "train_images", "seg_val_images", "video"
        (None when video=False), "names"} — paths absolute.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got {n_train}, {n_val}")
    if imgsz < 32:
        raise ValueError(f"imgsz must be >= 32, got {imgsz}")
    _renderer(preset)  # refuse an unknown preset before anything is written
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # build in a sibling temp folder and swap in, so an interrupted run never leaves a half dataset
    tmp = Path(tempfile.mkdtemp(prefix=".demo_data-", dir=root))
    try:
        for split, n in (("train", n_train), ("val", n_val)):
            _write_split(tmp, split, n, seed, imgsz, preset)
        if video:
            (tmp / "video").mkdir()
            _write_video(tmp / "video" / "shapes.mp4", seed, imgsz, imgsz * 3 // 2, video_frames, fps)
        settings = dict(n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed, video=video,
                        video_frames=video_frames, fps=fps, classes=list(CLASSES), preset=preset)
        (tmp / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
        for name in ("det", "seg", "video", "settings.json"):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if (tmp / name).exists():
                (tmp / name).rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _data_yaml(root / "shapes_det.yaml", root / "det", preset)
    _data_yaml(root / "shapes_seg.yaml", root / "seg", preset)
    return {"root": root, "det_yaml": root / "shapes_det.yaml", "seg_yaml": root / "shapes_seg.yaml",
            "train_images": root / "det" / "images" / "train", "val_images": root / "det" / "images" / "val",
            "seg_val_images": root / "seg" / "images" / "val",
            "video": root / "video" / "shapes.mp4" if video else None, "names": list(CLASSES)}
