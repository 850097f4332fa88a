"""Where DAttention looks, in image pixels: its reference grid, deformed sampling points and attention.

Fig. 6 of DAT draws each layer's reference points and the deformed points the keys are sampled at
(one colour per offset group); Fig. 7 draws, for one query, the attention over those sampled keys.
This module detects with the model's ordinary forward (for an ultralytics model, the one its predict runs),
then records both through `DAttention.record` by running each layer alone on the input that forward gave it
(`layer_inputs`, `record_layers`), so recording never changes a detection. It maps them to the pixels of the
ORIGINAL image (undoing YOLOv5's letterbox, or for an ultralytics model the letterbox of ultralytics' predict:
the long side to imgsz, padded to a stride multiple only; RT-DETR's stretch to imgsz×imgsz) and draws them.

Coordinate conventions
    * the module records normalised (y, x) in [-1, 1] over the map it samples (its input, H×W),
      `grid_sample(align_corners=True)`: -1 is the centre of the first cell, +1 of the last;
    * a feature cell i at stride s covers input pixels [i·s, (i+1)·s) (YOLOv5's Detect puts the
      cell centre at (i + 0.5)·s as well);
    * pixel coordinates written out are (x, y) in the original image, pixel-index convention: the
      centre of the top-left pixel is (0, 0) (what cv2 draws at).

Which weight belongs to which point: key k is read at point k of every offset group (the groups'
channels are concatenated, then proj_k mixes them), so a weight is not one group's alone. As DAT's
own position bias does, heads g·h/G … (g+1)·h/G − 1 are paired with group g: a point of group g
shows the attention of those heads to its key.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from yolov5_dattn.nn.dattention import DAttention

# distinct BGR colours for offset groups (colour-blind friendly: Okabe-Ito)
GROUP_COLOURS = [(0, 159, 230), (233, 180, 86), (115, 158, 0), (66, 228, 240), (178, 114, 0), (0, 94, 213),
                 (167, 121, 204), (0, 0, 0)]


@dataclass
class Letterbox:
    """How an original image (w×h) was placed in the network input: resized by (sx, sy), then padded
    by (left, top) pixels, to (in_w, in_h)."""
    sx: float
    sy: float
    left: int
    top: int
    in_w: int
    in_h: int
    w: int
    h: int

    def input_to_image(self, xy: np.ndarray) -> np.ndarray:
        """Continuous input coordinates (pixel p spans [p, p+1)) -> original pixel-index (x, y). (..., 2)"""
        x = (xy[..., 0] - self.left) / self.sx - 0.5
        y = (xy[..., 1] - self.top) / self.sy - 0.5
        return np.stack([x, y], -1)

    def image_to_input(self, xy: np.ndarray) -> np.ndarray:
        """Original pixel-index (x, y) -> continuous input coordinates. (..., 2)"""
        x = (xy[..., 0] + 0.5) * self.sx + self.left
        y = (xy[..., 1] + 0.5) * self.sy + self.top
        return np.stack([x, y], -1)


def letterbox(img: np.ndarray, imgsz: int) -> Tuple[np.ndarray, Letterbox]:
    """YOLOv5's letterbox to a square imgsz×imgsz input (val/detect without rect), and its geometry.

    Args: img (h, w, 3) BGR uint8. Returns: (imgsz, imgsz, 3) BGR uint8 and the `Letterbox`.
    """
    from yolov5.utils.augmentations import letterbox as yolov5_letterbox
    h, w = img.shape[:2]
    padded, (r, _), (dw, dh) = yolov5_letterbox(img, imgsz, auto=False)
    new_w, new_h = int(round(w * r)), int(round(h * r))  # as yolov5 rounds the resized size
    box = Letterbox(sx=new_w / w, sy=new_h / h, left=int(round(dw - 0.1)), top=int(round(dh - 0.1)),
                    in_w=padded.shape[1], in_h=padded.shape[0], w=w, h=h)
    return padded, box


def normalised_to_image(coords: np.ndarray, map_hw: Sequence[int], box: Letterbox) -> np.ndarray:
    """Sampling coordinates recorded by DAttention -> original-image pixels.

    Args:
        coords: (..., 2) normalised (y, x) over a map of map_hw = (H, W) cells.
        box: the input's letterbox.
    Returns: (..., 2) pixel-index (x, y) in the original image.
    """
    H, W = map_hw
    cell_y = (coords[..., 0] + 1.0) / 2.0 * max(H - 1, 1)  # cell units, 0 = centre of the first cell
    cell_x = (coords[..., 1] + 1.0) / 2.0 * max(W - 1, 1)
    stride_y, stride_x = box.in_h / H, box.in_w / W
    xy_input = np.stack([(cell_x + 0.5) * stride_x, (cell_y + 0.5) * stride_y], -1)
    return box.input_to_image(xy_input)


def image_to_query(xy: Sequence[float], map_hw: Sequence[int], box: Letterbox) -> Tuple[int, int]:
    """The (row, col) of the query cell, in a map of map_hw = (H, W), that covers original pixel (x, y)."""
    H, W = map_hw
    x_in, y_in = box.image_to_input(np.asarray(xy, dtype=np.float64))
    row = int(np.clip(np.floor(y_in / (box.in_h / H)), 0, H - 1))
    col = int(np.clip(np.floor(x_in / (box.in_w / W)), 0, W - 1))
    return row, col


def dattention_layers(model: nn.Module) -> List[Tuple[str, DAttention]]:
    """Every DAttention of `model`, in forward order, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, DAttention)]


@contextmanager
def layer_inputs(model: nn.Module, names: Sequence[str]) -> Iterator[Dict[str, torch.Tensor]]:
    """Capture the input of each DAttention of `model` named in `names` during the forward run inside.

    Only a pre-hook is added: `record` stays off, so the forward runs the kernel and numerics it runs anywhere
    else (predict, val), and its detections are the model's own. Yields {name: (B, C, H, W) detached copy of the
    layer's last input}; removes the hooks on exit.
    """
    modules = dict(model.named_modules())
    inputs: Dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_pre_hook(
        lambda mod, args, name=name: inputs.__setitem__(name, args[0].detach().clone())) for name in names]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def record_layers(model: nn.Module, inputs: Dict[str, torch.Tensor]) -> Dict[str, Tuple[Tuple[int, int], dict]]:
    """Run each DAttention of `model` named in `inputs` once more, alone, on its captured input with `record` on.

    The sampling positions are those of the captured forward (computed from the same input by the same code);
    the weights are the softmax of the same q·kᵀ that the fused kernels apply without storing it. The module's
    `record` and `recorded` are left as they were.

    Returns: {name: ((H, W) of the layer's input map, recorded)}, `recorded` as `DAttention.forward` documents:
    `pos`, `reference` (B, g, Hk, Wk, 2) and `attn` (B, heads, H·W, Hk·Wk).
    """
    modules = dict(model.named_modules())
    out = {}
    for name, x in inputs.items():
        m = modules[name]
        was, kept = m.record, m.recorded
        m.record = True
        try:
            m(x)
            out[name] = (tuple(int(s) for s in x.shape[-2:]), m.recorded)
        finally:
            m.record, m.recorded = was, kept
    return out


def layer_geometry(name: str, m: DAttention, map_hw: Tuple[int, int], box: Letterbox,
                   query_xy: Optional[Sequence[float]], recorded: Optional[dict] = None) -> dict:
    """One layer's recorded positions and weights, in image pixels (batch item 0).

    `recorded` is the layer's record (from `record_layers`); default `m.recorded`.

    Returns a JSON-ready dict: `groups[g]` has `reference` and `sampling` [[x, y], ...] (Hk·Wk points,
    row-major) and `weight` (attention to each key, mean over the group's heads and the queries that attend);
    `query` has the query pixel, its cell, whether it attends (`selected`) and `weight[g][k]` (mean over the
    group's heads; zeros for a query that does not attend); `queries` has the layer's `ratio` and that
    `selected` of `of` (H·W) queries attend, and for a sparse layer (query_ratio < 1) which: `index` (row-major
    positions, as the module chose them: highest score first), `cells` [[row, col], ...] and `pixels` [[x, y],
    ...] (cell centres).
    """
    rec = m.recorded if recorded is None else recorded
    # float64 from here on: pixel coordinates and weights are written to JSON rounded, not float32-noisy
    pos, ref = rec["pos"][0].double().cpu().numpy(), rec["reference"][0].double().cpu().numpy()  # (g, Hk, Wk, 2)
    attn = rec["attn"][0].double().cpu()  # (heads, H·W, Hk·Wk)
    g, Hk, Wk, _ = pos.shape
    H, W = map_hw
    per_group = attn.reshape(g, m.n_group_heads, H * W, Hk * Wk).mean(1)  # (g, HW, Ns)
    sampling, reference = normalised_to_image(pos, map_hw, box), normalised_to_image(ref, map_hw, box)
    chosen = rec.get("selected")  # (B, k) for a sparse layer: the other queries' rows are zero
    index = None if chosen is None else chosen[0].cpu().numpy().astype(np.int64)
    mean_weight = (per_group if index is None else per_group[:, index]).mean(1).numpy()  # (g, Ns)
    if query_xy is None:
        query_xy = ((box.w - 1) / 2, (box.h - 1) / 2)
    row, col = image_to_query(query_xy, map_hw, box)
    query_weight = per_group[:, row * W + col].numpy()  # (g, Ns)
    scorer = getattr(m, "query_scorer", None)
    queries = {"ratio": 1.0 if scorer is None else float(scorer.ratio), "selected": int(H * W if index is None else len(index)),
               "of": int(H * W)}
    if index is not None:
        cells = np.stack([index // W, index % W], -1)
        centres = normalised_to_image(np.stack([2 * cells[:, 0] / max(H - 1, 1) - 1,
                                                2 * cells[:, 1] / max(W - 1, 1) - 1], -1), map_hw, box)
        queries.update(index=index.tolist(), cells=cells.tolist(), pixels=centres.round(3).tolist())
    return {
        "name": name,
        "map_hw": [int(H), int(W)],
        "key_hw": [int(Hk), int(Wk)],
        "stride": [box.in_h / H, box.in_w / W],
        "queries": queries,
        "groups": [{"group": k,
                    "reference": reference[k].reshape(-1, 2).round(3).tolist(),
                    "sampling": sampling[k].reshape(-1, 2).round(3).tolist(),
                    "weight": mean_weight[k].round(6).tolist()} for k in range(g)],
        "query": {"pixel": [float(query_xy[0]), float(query_xy[1])], "cell": [row, col],
                  "cell_centre": normalised_to_image(
                      np.array([2 * row / max(H - 1, 1) - 1, 2 * col / max(W - 1, 1) - 1]), map_hw, box
                  ).round(3).tolist(),
                  "selected": index is None or bool((index == row * W + col).any()),
                  "weight": query_weight.round(6).tolist()},
    }


# ---- drawing ---------------------------------------------------------------------------------------
def _radius(img: np.ndarray, weight: np.ndarray, peak: float) -> np.ndarray:
    """Dot radii in pixels, area-proportional to weight / peak, scaled to the image."""
    r_max = max(3.0, min(img.shape[:2]) / 40)
    return 1.0 + (r_max - 1.0) * np.sqrt(np.clip(weight / max(peak, 1e-12), 0, 1))


def _pt(xy, scale: float = 1.0) -> Tuple[int, int]:
    """Original pixel-index (x, y) -> integer pixel of a drawing enlarged `scale` times."""
    return int(round((xy[0] + 0.5) * scale - 0.5)), int(round((xy[1] + 0.5) * scale - 0.5))


def enlarge(img: np.ndarray, scale: float) -> np.ndarray:
    """The canvas for drawing: img resized by `scale` (small images are hard to read at 1×)."""
    if scale == 1:
        return img.copy()
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)


def queries_caption(layer: dict) -> str:
    """'1600 of 6400 queries attend (query_ratio 0.25)' for a sparse layer of `layer_geometry`; '' for a dense one."""
    q = layer.get("queries") or {}
    if "index" not in q:
        return ""
    return f"{q['selected']} of {q['of']} queries attend (query_ratio {q['ratio']:g})"


def _caption(out: np.ndarray, *lines: str) -> None:
    """`lines` in the top-left corner, white on a black outline (readable on any image); in place."""
    size = max(0.35, min(out.shape[:2]) / 800)
    step = int(14 * size / 0.35)
    for i, text in enumerate(lines, 1):
        for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(out, text, (4, i * step), cv2.FONT_HERSHEY_SIMPLEX, size, colour, width, cv2.LINE_AA)


def letterbox_of(result: dict) -> Letterbox:
    """The `Letterbox` of an `analyse` / `analyse_ultralytics` result (from its `image_hw` and `letterbox`)."""
    lb = result["letterbox"]
    return Letterbox(sx=lb["scale_xy"][0], sy=lb["scale_xy"][1], left=lb["pad_xy"][0], top=lb["pad_xy"][1],
                     in_w=lb["input_hw"][1], in_h=lb["input_hw"][0], w=result["image_hw"][1], h=result["image_hw"][0])


def draw_selected(canvas: np.ndarray, layer: dict, box: Letterbox, scale: float = 1.0) -> np.ndarray:
    """The query cells a sparse layer selected, lightened (the cells that do not attend stay as they are); a dense
    layer's canvas is returned unchanged (a copy). `draw_points` on the result adds the count ('k of H·W ...').

    Args: canvas: the image enlarged by `scale`; layer: from `layer_geometry`; box: the input's letterbox.
    Returns: a drawn copy of canvas.
    """
    out = canvas.copy()
    q = layer.get("queries") or {}
    if "cells" not in q:
        return out
    H, W = layer["map_hw"]
    mask = np.zeros(out.shape[:2], np.uint8)
    for row, col in q["cells"]:  # the cell's edges: input pixels [col·s, (col+1)·s) -> original image -> canvas
        corners = box.input_to_image(np.array([[col * box.in_w / W, row * box.in_h / H],
                                               [(col + 1) * box.in_w / W, (row + 1) * box.in_h / H]])) + 0.5
        (x0, y0), (x1, y1) = (corners * scale).round().astype(int)
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1
    lighter = (out.astype(np.float32) * 0.55 + 255 * 0.45).astype(np.uint8)
    out[mask.astype(bool)] = lighter[mask.astype(bool)]
    return out


def draw_points(canvas: np.ndarray, layer: dict, group: Optional[int] = None, scale: float = 1.0) -> np.ndarray:
    """Fig. 6: reference grid (grey), an arrow to each deformed sampling point, dot sized by attention.

    Args: canvas: the image enlarged by `scale` (see `enlarge`), (h·scale, w·scale, 3) BGR;
        layer: from `layer_geometry`; group: only this offset group.
    Returns: a drawn copy of canvas.
    """
    out = canvas.copy()
    groups = [gr for gr in layer["groups"] if group is None or gr["group"] == group]
    peak = max(max(gr["weight"]) for gr in groups)
    for gr in groups:
        colour = GROUP_COLOURS[gr["group"] % len(GROUP_COLOURS)]
        radii = _radius(out, np.asarray(gr["weight"]), peak)
        for ref, pos, r in zip(gr["reference"], gr["sampling"], radii):
            cv2.circle(out, _pt(ref, scale), 1, (160, 160, 160), -1, cv2.LINE_AA)
            cv2.line(out, _pt(ref, scale), _pt(pos, scale), colour, 1, cv2.LINE_AA)
            cv2.circle(out, _pt(pos, scale), int(round(r)), colour, -1, cv2.LINE_AA)
    if queries_caption(layer):  # a sparse layer: how many queries attend (`draw_selected` marks which)
        _caption(out, queries_caption(layer))
    return out


def draw_query(canvas: np.ndarray, layer: dict, group: Optional[int] = None, scale: float = 1.0) -> np.ndarray:
    """Fig. 7: the attention of one query over the sampled keys (JET colour from its min to max weight, dot
    size by weight), the query pixel as a white star.

    Args: canvas: the image enlarged by `scale` (see `enlarge`), (h·scale, w·scale, 3) BGR;
        layer: from `layer_geometry`; group: only this offset group.
    Returns: a drawn copy of canvas.
    """
    out = (canvas.astype(np.float32) * 0.6).astype(np.uint8)  # dim, so the heat colours stand out
    query = layer["query"]
    groups = [gr for gr in layer["groups"] if group is None or gr["group"] == group]
    weights = np.concatenate([np.asarray(query["weight"][gr["group"]]) for gr in groups])
    points = np.concatenate([np.asarray(gr["sampling"]) for gr in groups])
    peak, low = float(weights.max()), float(weights.min())
    # colour spans this query's own min..max (a barely trained layer attends almost uniformly); size is
    # proportional to the weight itself
    level = (weights - low) / max(peak - low, 1e-12) * 255
    colours = cv2.applyColorMap(np.clip(level, 0, 255).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    radii = _radius(out, weights, peak)
    for i in np.argsort(weights):  # strongest drawn last, on top
        cv2.circle(out, _pt(points[i], scale), int(round(radii[i])), tuple(int(c) for c in colours[i]), -1, cv2.LINE_AA)
    size = max(6, min(out.shape[:2]) // 30)
    cv2.drawMarker(out, _pt(query["pixel"], scale), (255, 255, 255), cv2.MARKER_STAR, size, 2, cv2.LINE_AA)
    if queries_caption(layer):
        _caption(out, queries_caption(layer), *([] if query.get("selected", True) else ["this one does not"]))
    return out


def draw_detections(img: np.ndarray, detections: Sequence[dict], scale: float = 1.0) -> np.ndarray:
    """Boxes with `label conf` (cv2 text: no font file needed) on a drawing enlarged `scale` times.
    Draws in place and returns img."""
    for det in detections:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in det["xyxy"])  # box edges scale from 0
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 255, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{det['label']} {det['conf']:.2f}", (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (0, 255, 0), 1, cv2.LINE_AA)
    return img


# ---- one image end to end ----------------------------------------------------------------------------
@torch.no_grad()
def analyse(model: nn.Module, img: np.ndarray, imgsz: int, layers: Sequence[Tuple[str, DAttention]],
            query_xy: Optional[Sequence[float]] = None, conf_thres: float = 0.25,
            iou_thres: float = 0.45) -> dict:
    """Run `model` on one BGR image; return detections and every chosen layer's geometry, in image pixels.

    The detections come from the model's ordinary forward (`record` off: the kernel val and detect run); the
    attention is recorded afterwards from the inputs that forward gave each layer (`layer_inputs`, `record_layers`).

    Args:
        model: a YOLOv5 detection/segmentation model in eval mode.
        img: (h, w, 3) BGR uint8; imgsz: square network input size.
        layers: from `dattention_layers` (a subset is fine).
        query_xy: (x, y) original pixel for Fig. 7; default: the centre of the most confident
            detection, else the image centre.
    Returns: {"image_hw", "letterbox", "detections": [{xyxy, conf, cls, label}], "layers": [...]}
    """
    from yolov5.utils.general import non_max_suppression

    padded, box = letterbox(img, imgsz)
    param = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).to(param.device)
    x = x.to(param.dtype).div(255.0).unsqueeze(0)
    with layer_inputs(model, [name for name, _ in layers]) as inputs:
        out = model(x)
    recorded = record_layers(model, inputs)
    pred = out[0] if isinstance(out, (list, tuple)) else out
    nm = int(getattr(model.model[-1], "nm", 0)) if hasattr(model, "model") else 0  # mask coefficients (seg)
    det = non_max_suppression(pred, conf_thres, iou_thres, nm=nm)[0][:, :6].float().cpu().numpy()
    names = getattr(model, "names", {})
    detections = []
    for x0, y0, x1, y1, conf, cls in det:
        corners = box.input_to_image(np.array([[x0, y0], [x1, y1]])) + 0.5  # box edges, not pixel centres
        corners = corners.clip(0, [box.w, box.h])
        label = names[int(cls)] if isinstance(names, (dict, list)) and int(cls) < len(names) else str(int(cls))
        detections.append({"xyxy": corners.reshape(-1).round(2).tolist(), "conf": round(float(conf), 4),
                           "cls": int(cls), "label": str(label)})
    return _result(box, detections, layers, recorded, query_xy)


def _result(box: Letterbox, detections: List[dict], layers: Sequence[Tuple[str, DAttention]],
            recorded: Dict[str, Tuple[Tuple[int, int], dict]], query_xy: Optional[Sequence[float]]) -> dict:
    """`analyse`'s dict from `record_layers`' records; the query defaults to the centre of detections[0] (the most
    confident)."""
    if query_xy is None and detections:
        x0, y0, x1, y1 = detections[0]["xyxy"]  # NMS sorts by confidence
        query_xy = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)
    return {
        "image_hw": [int(box.h), int(box.w)],
        "letterbox": {"input_hw": [box.in_h, box.in_w], "scale_xy": [box.sx, box.sy], "pad_xy": [box.left, box.top]},
        "detections": detections,
        "layers": [layer_geometry(name, m, recorded[name][0], box, query_xy, recorded[name][1])
                   for name, m in layers],
    }


# ---- ultralytics models --------------------------------------------------------------------------------
def is_ultralytics_model(model: nn.Module) -> bool:
    """True for a model of the ultralytics package (DetectionModel, SegmentationModel, RTDETRDetectionModel...)."""
    return type(model).__module__.startswith("ultralytics.")


def _is_rtdetr(model: nn.Module) -> bool:
    return type(model).__name__ == "RTDETRDetectionModel"


def ultralytics_letterbox(img: np.ndarray, imgsz: int, stride: int, scale_fill: bool = False
                          ) -> Tuple[np.ndarray, Letterbox]:
    """The input ultralytics' predict makes of one image, and its geometry: `LetterBox` with `auto` (the long
    side resized to imgsz, the short side padded to a multiple of `stride` only), or with `scale_fill` (RT-DETR:
    stretched to imgsz×imgsz, no padding).

    Args: img (h, w, 3) BGR uint8; imgsz (a multiple of stride). Returns: (in_h, in_w, 3) BGR uint8, `Letterbox`.
    """
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.checks import check_imgsz

    size = check_imgsz(imgsz, stride=stride, min_dim=2)  # [h, w], as predict's setup_source
    transform = LetterBox(size, auto=not scale_fill, scale_fill=scale_fill, stride=stride)
    params = transform.get_params({"img": img})
    padded = transform(image=img)
    h, w = img.shape[:2]
    new_w, new_h = params["new_unpad"]
    box = Letterbox(sx=new_w / w, sy=new_h / h, left=int(params["left"]), top=int(params["top"]),
                    in_w=padded.shape[1], in_h=padded.shape[0], w=w, h=h)
    return padded, box


def ultralytics_predictor(model: nn.Module, conf_thres: float = 0.25, iou_thres: float = 0.45):
    """ultralytics' predictor of `model`'s task, set up as `YOLO(...).predict` sets it up (its arguments: conf, iou,
    `rect`, batch 1) with the model it runs: `setup_model` wraps a copy of `model` in `AutoBackend`, which fuses
    Conv+BN and may switch the weights to channels-last. `model` itself is left as it is.

    Build it once for many images (each build copies and fuses the model). Returns the predictor.
    """
    from ultralytics.models.rtdetr.predict import RTDETRPredictor
    from ultralytics.models.yolo import detect, obb, pose, segment
    task = getattr(model, "task", None) or "detect"
    classes = {"detect": detect.DetectionPredictor, "segment": segment.SegmentationPredictor,
               "pose": pose.PosePredictor, "obb": obb.OBBPredictor}
    cls = RTDETRPredictor if _is_rtdetr(model) else classes.get(task, detect.DetectionPredictor)
    device = next(model.parameters()).device
    predictor = cls(overrides={"conf": conf_thres, "iou": iou_thres, "task": task, "mode": "predict",
                               "save": False, "verbose": False, "rect": True, "batch": 1,
                               "device": "cpu" if device.type == "cpu" else str(device.index or 0)})
    predictor.setup_model(model, verbose=False)
    return predictor


@torch.no_grad()
def analyse_ultralytics(model: nn.Module, img: np.ndarray, imgsz: int, layers: Sequence[Tuple[str, DAttention]],
                        query_xy: Optional[Sequence[float]] = None, conf_thres: float = 0.25,
                        iou_thres: float = 0.45, predictor=None) -> dict:
    """`analyse` for an ultralytics model, run as ultralytics' predict runs it: its input (`preprocess`, whose
    geometry `ultralytics_letterbox` gives), its model (`ultralytics_predictor`: the fused copy predict runs, on
    the same kernel) and its `postprocess` (NMS, or RT-DETR's and YOLO26's end-to-end scores). Detections are
    sorted by confidence; the attention is recorded afterwards from the inputs that forward gave each layer.

    Args: as `analyse`; predictor: from `ultralytics_predictor(model, conf_thres, iou_thres)` (built here when
        None; pass one to analyse many images). Returns: `analyse`'s dict.
    """
    from ultralytics.utils.checks import check_imgsz

    predictor = predictor or ultralytics_predictor(model, conf_thres, iou_thres)
    runs = predictor.model.model  # the copy of `model` that predict runs (AutoBackend's backend model)
    stride = int(predictor.model.stride)
    _, box = ultralytics_letterbox(img, imgsz, stride, scale_fill=_is_rtdetr(model))
    predictor.imgsz = check_imgsz(imgsz, stride=stride, min_dim=2)  # as predict's setup_source
    x = predictor.preprocess([img])
    if tuple(x.shape[-2:]) != (box.in_h, box.in_w):
        raise RuntimeError(f"ultralytics' predict made a {tuple(x.shape[-2:])} input, the geometry says "
                           f"{(box.in_h, box.in_w)}: this ultralytics letterboxes differently")
    if not predictor.done_warmup:  # as predict's first batch: this also picks the NMS predict uses (torchvision's)
        predictor.model.warmup(im=x)
        predictor.done_warmup = True
    with layer_inputs(runs, [name for name, _ in layers]) as inputs:
        out = predictor.model(x)
    recorded = record_layers(runs, inputs)
    predictor.batch = ([""],)  # the image paths postprocess names its results by
    (found,) = predictor.postprocess(out, x, [img])
    names = found.names or {}
    detections = []
    if found.boxes is not None and len(found.boxes):
        boxes = found.boxes
        xyxy, conf, cls = (t.float().cpu().numpy() for t in (boxes.xyxy, boxes.conf, boxes.cls))
        for i in np.argsort(-conf, kind="stable"):
            corners = xyxy[i].reshape(2, 2).clip(0, [box.w, box.h])  # box edges in original pixels
            c = int(cls[i])
            detections.append({"xyxy": corners.reshape(-1).round(2).tolist(), "conf": round(float(conf[i]), 4),
                               "cls": c, "label": str(names.get(c, c) if isinstance(names, dict) else c)})
    return _result(box, detections, layers, recorded, query_xy)
