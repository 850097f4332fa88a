"""The `dense` preset of the synthetic data: many small shapes on cluttered, textured backgrounds.

The default preset (a few large shapes on a smooth gradient) is solved by a stock yolov5n in minutes, so it
cannot show whether attention helps. Here each image holds 18-32 shapes whose boxes are about 4-10 % of the
image side (at 160 px: mostly one to two P3 cells), on a background of multi-scale noise and striped patches,
with unlabelled clutter (strokes, crosses, arcs) drawn in the same colour families as the classes, so colour
alone no longer separates an object from the background: the model has to use shape and context.

Classes, colours, label formats and determinism are those of `demo_data` (each image has its own random
stream, so the val split does not depend on the train size); the streams differ from the default preset's.
"""
import math
from typing import List, Tuple

import cv2
import numpy as np

from .demo_data import CLASSES, SPLITS, Polygon, class_colour, draw_shapes, place_shapes

__all__ = ("DENSE_RADIUS", "DENSE_OBJECTS", "render_dense_image")

DENSE_RADIUS = (0.025, 0.05)  # circumradius as a fraction of the short side: box sides ~4-10 % of the image
MIN_RADIUS_PX = 3.0  # below this a triangle and a circle are the same few pixels
DENSE_OBJECTS = (18, 32)  # shapes attempted per image (placement keeps boxes disjoint, so a few may not fit)
CLUTTER = (12, 28)  # unlabelled strokes per image
STREAM = 1  # the dense preset's random streams: [seed, split, index, STREAM]


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: int, amplitude: float) -> np.ndarray:
    """Smooth noise with features about `cell` pixels wide: a coarse random grid, bicubically upsampled.

    Returns: (h, w, 3) float32.
    """
    grid = rng.normal(0, amplitude, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    big = cv2.resize(grid, ((w // cell + 2) * cell, (h // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w]


def _stripes(rng: np.random.Generator, img: np.ndarray) -> None:
    """Add 3-6 rectangles of fine stripes (period 3-8 px, any angle) in place: texture at object scale."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        ph, pw = (rng.uniform(0.2, 0.5, 2) * (h, w)).astype(int) + 1
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        angle, period = rng.uniform(0, math.pi), rng.uniform(3, 8)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        tint = rng.uniform(10, 30) * rng.uniform(0.6, 1.0, 3)
        img[y0:y0 + ph, x0:x0 + pw] += wave[y0:y0 + ph, x0:x0 + pw, None] * tint


def _cluttered_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-saturation base colour + noise at three scales + striped patches + pixel noise.

    Returns: (h, w, 3) float32 BGR (clipped to 0-255 by the caller after the clutter is drawn).
    """
    base = rng.uniform(70, 180) + rng.uniform(-15, 15, 3)
    img = np.full((h, w, 3), base, np.float32)
    for cell, amplitude in ((max(h, w) // 3, 30.0), (12, 18.0), (4, 10.0)):
        img += _value_noise(rng, h, w, max(cell, 1), amplitude)
    _stripes(rng, img)
    img += rng.normal(0, 5, (h, w, 3)).astype(np.float32)
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw unlabelled strokes in place: straight lines, crosses and open arcs, 1-2 px wide, in the classes'
    colour families. None is a filled polygon, so none can be mistaken for a labelled shape."""
    h, w = img.shape[:2]
    short = min(h, w)
    for _ in range(int(rng.integers(*CLUTTER))):
        colour = class_colour(rng, int(rng.integers(len(CLASSES))))
        kind = int(rng.integers(3))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.03, 0.12) * short
        thick = int(rng.integers(1, 3))
        if kind == 0:  # a line
            a = rng.uniform(0, math.pi)
            dx, dy = size * math.cos(a), size * math.sin(a)
            cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), colour, thick, cv2.LINE_AA)
        elif kind == 1:  # a cross
            a = rng.uniform(0, math.pi / 2)
            for b in (a, a + math.pi / 2):
                dx, dy = size / 2 * math.cos(b), size / 2 * math.sin(b)
                cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), colour, thick,
                         cv2.LINE_AA)
        else:  # an open arc (at most 240°, so never a closed ring)
            start = rng.uniform(0, 360)
            cv2.ellipse(img, (int(cx), int(cy)), (int(size / 2) + 1, int(size / 2) + 1), 0.0, start,
                        start + rng.uniform(90, 240), colour, thick, cv2.LINE_AA)


def render_dense_image(seed: int, split: str, index: int, h: int,
                       w: int) -> Tuple[np.ndarray, List[Tuple[int, Polygon]]]:
    """Render one image of the dense preset; depends only on (seed, split, index, h, w).

    Returns: image (h, w, 3) uint8 BGR, and [(class, polygon (k, 2) pixel x, y), ...] (the labelled shapes,
    drawn last, so every one is fully visible).
    """
    rng = np.random.default_rng([seed, SPLITS[split], index, STREAM])
    img = _cluttered_background(rng, h, w)
    _clutter(rng, img)
    img = np.clip(img, 0, 255).astype(np.uint8)
    shapes = place_shapes(rng, h, w, int(rng.integers(DENSE_OBJECTS[0], DENSE_OBJECTS[1] + 1)), DENSE_RADIUS,
                          MIN_RADIUS_PX)
    draw_shapes(img, rng, shapes)
    return img, shapes
