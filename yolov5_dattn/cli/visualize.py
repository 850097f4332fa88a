"""Where does the deformable attention look? Draw it over images or a video (DAT Figs. 6 and 7).

For every image (or video frame) and every DAttention layer, writes to runs/attention/exp*/:
    <stem>_layer<i>_points.png  reference grid (grey) -> deformed sampling points, one colour per
                                offset group, dot size = attention weight (mean over the queries that
                                attend); for a layer with query_ratio < 1 the selected query cells are
                                lightened and the corner says 'k of H·W queries attend';
    <stem>_layer<i>_query.png   one query pixel's attention over the sampled keys (Fig. 7);
    <stem>.json                 the pixel coordinates of every drawn point, weights and detections;
and, for a video, <stem>_layer<i>_points.mp4 / _query.mp4 instead of PNGs. Detections are drawn too.

--weights is a YOLOv5 checkpoint (scripts/train.py) or an ultralytics one (`yolov5-dattn yolo train
model=configs/ultralytics/...`), told apart by the classes the file names (read, not run). An ultralytics
checkpoint is loaded by ultralytics' own loader with restricted loading, and the image is letterboxed as
ultralytics' predict does (long side to --imgsz, padded to a stride multiple only; RT-DETR stretched).

Example:
    yolov5-dattn visualize --weights runs/train/exp/weights/best.pt --source img.jpg --imgsz 640 --query 320,200
    python scripts/visualize_attention.py --weights ...      # the same, from a checkout
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from yolov5_dattn.errors import UserError, one_line

IMG_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
VID_SUFFIXES = {".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".wmv"}


def parse_args(argv: Optional[Sequence[str]] = None,
               prog: str = "scripts/visualize_attention.py") -> argparse.Namespace:
    """The command line of `visualize` (default sys.argv[1:])."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True,
                   help="checkpoint .pt of a model with DAttention layers (e.g. best.pt), YOLOv5 or ultralytics")
    p.add_argument("--source", required=True, help="an image, a folder of images, or a video file")
    p.add_argument("--imgsz", type=int, default=640,
                   help="inference size in pixels (multiple of 32): the square input for YOLOv5, the long side "
                        "for ultralytics (as its predict)")
    p.add_argument("--layer", type=int, default=None,
                   help="draw only DAttention layer N (0-based, forward order; default: all, listed at start)")
    p.add_argument("--group", type=int, default=None, help="draw only offset group G (default: all groups)")
    p.add_argument("--query", default=None,
                   help="x,y query pixel of the original image for the attention map (default: centre of the "
                        "most confident detection, else the image centre)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="detection confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--draw-scale", type=float, default=1.0,
                   help="enlarge the drawings by this factor (for small images; JSON coordinates stay in "
                        "original-image pixels)")
    p.add_argument("--max-frames", type=int, default=0, help="video: stop after this many frames (0: all)")
    p.add_argument("--device", default="cpu", help="cpu, or a cuda device such as 0")
    p.add_argument("--project", default="runs/attention", help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing project/name, do not increment")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load --weights with full pickle if it names classes outside the safe allowlist "
                        "(only for files whose source you trust)")
    return p.parse_args(argv)


def parse_query(text: Optional[str]):
    """'x,y' -> (x, y) floats, or None."""
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--query {text!r} is not x,y: pass two pixel coordinates such as --query 320,200") from None
    return x, y


def list_sources(source: str):
    """('images', [paths]) or ('video', [path]); UserError when there is nothing readable."""
    import cv2
    path = Path(source)
    if not path.exists():
        raise UserError(f"--source {source} not found: pass an image, a folder of images or a video file")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMG_SUFFIXES)
        if not images:
            raise UserError(f"--source {source} has no images ({', '.join(sorted(IMG_SUFFIXES))})")
    elif path.suffix.lower() in VID_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        ok = capture.isOpened() and capture.read()[0]
        capture.release()
        if not ok:
            raise UserError(f"--source {source}: cannot read a frame from this video (corrupt or unsupported codec)")
        return "video", [path]
    elif path.suffix.lower() in IMG_SUFFIXES:
        images = [path]
    else:
        raise UserError(f"--source {source}: unsupported file type {path.suffix!r}: pass an image "
                        f"({', '.join(sorted(IMG_SUFFIXES))}), a folder or a video ({', '.join(sorted(VID_SUFFIXES))})")
    unreadable = [str(p) for p in images if not cv2.haveImageReader(str(p))]
    if unreadable:
        raise UserError(f"--source: cannot read image {unreadable[0]} (corrupt or not an image): remove or replace it")
    return "images", images


def checkpoint_host(weights) -> str:
    """'ultralytics' when checkpoint `weights` names ultralytics classes, else 'yolov5' (also for a file that is
    missing or unreadable: YOLOv5's loader then says what is wrong). Reads the pickle's class names, runs nothing."""
    import torch

    from yolov5_dattn.hosts.yolov5.checkpoints import without_process_allowlist
    path = Path(weights)
    if not path.is_file():
        return "yolov5"
    try:
        with without_process_allowlist():  # list every class, also those another loader allowed for good
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint (old format, corrupt)
        names = []
    return "ultralytics" if any(n.startswith(("ultralytics.", "yolov5_dattn.hosts.ultralytics.")) for n in names) \
        else "yolov5"


def _ultralytics_model(opt):
    """The ultralytics checkpoint's model (float, eval; ultralytics' loader, restricted) and its device."""
    from yolov5_dattn.hosts.ultralytics.baseline import load_checkpoint
    from ultralytics.utils.torch_utils import select_device
    model = load_checkpoint(opt.weights, trust=opt.trust_checkpoint)

    def device():
        try:
            return select_device(opt.device, verbose=False)
        except Exception as e:  # ultralytics raises ValueError for a CUDA device that is not there
            raise UserError(f"--device {opt.device}: {' '.join(str(e).split())}") from None
    return model, device


def _yolov5_model(opt):
    """The YOLOv5 checkpoint's model (float, eval) and its device."""
    import os

    from yolov5.utils.torch_utils import select_device

    from yolov5_dattn.hosts.yolov5.checkpoints import TRUST_ENV, check_model_checkpoint
    if opt.trust_checkpoint:
        os.environ[TRUST_ENV] = "1"
    model = check_model_checkpoint(opt.weights).float().eval()

    def device():
        try:
            return select_device(opt.device)
        except Exception as e:  # yolov5 asserts on a missing CUDA device
            raise UserError(f"--device {opt.device}: {' '.join(str(e).split())}") from None
    return model, device


def load_model(opt):
    """The checkpoint's model (float, eval) and the DAttention layers to draw."""
    from yolov5_dattn.analysis.attention_viz import dattention_layers
    ultralytics = checkpoint_host(opt.weights) == "ultralytics"
    model, device = (_ultralytics_model if ultralytics else _yolov5_model)(opt)
    layers = dattention_layers(model)
    if not layers:
        configs = "configs/ultralytics/*-dattn.yaml" if ultralytics else "*_c3_dattn.yaml"
        raise UserError(f"--weights {opt.weights} has no DAttention layer: pass a model trained from a "
                        f"{configs} config (yolov5-dattn configs lists them)")
    if opt.layer is not None and not 0 <= opt.layer < len(layers):
        raise UserError(f"--layer {opt.layer} is out of range: this model has {len(layers)} DAttention "
                        f"layer(s), 0..{len(layers) - 1}")
    groups = min(m.n_groups for _, m in layers)
    if opt.group is not None and not 0 <= opt.group < groups:
        raise UserError(f"--group {opt.group} is out of range: the layers have {groups} offset groups, 0..{groups - 1}")
    if opt.draw_scale <= 0:
        raise UserError(f"--draw-scale {opt.draw_scale} must be positive (1 keeps the image size)")
    if opt.imgsz <= 0 or opt.imgsz % 32:
        raise UserError(f"--imgsz {opt.imgsz} must be a positive multiple of 32 (the model's largest stride)")
    return model.to(device()), layers


def render(img, result: dict, group: Optional[int], scale: float = 1.0):
    """[(kind, image)] for each layer of `result`: 'points' (Fig. 6; a sparse layer's selected query cells
    lightened under the points) and 'query' (Fig. 7), detections drawn."""
    from yolov5_dattn.analysis.attention_viz import (draw_detections, draw_points, draw_query, draw_selected, enlarge,
                                                     letterbox_of)
    canvas = draw_detections(enlarge(img, scale), result["detections"], scale)  # under the points
    box = letterbox_of(result)
    drawn = []
    for layer in result["layers"]:
        drawn.append((f"layer{layer['index']}_points",
                       draw_points(draw_selected(canvas, layer, box, scale), layer, group, scale)))
        drawn.append((f"layer{layer['index']}_query", draw_query(canvas, layer, group, scale)))
    return drawn


def main(argv: Optional[Sequence[str]] = None, prog: str = "scripts/visualize_attention.py") -> int:
    """Run the visualiser; returns the exit status (2 with `error: <one line>` for bad input)."""
    opt = parse_args(argv, prog)
    try:
        query = parse_query(opt.query)
        kind, sources = list_sources(opt.source)
        model, layers = load_model(opt)
        run(opt, model, layers, kind, sources, query)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


def run(opt, model, layers, kind: str, sources: List[Path], query) -> Path:
    """Write the PNGs / MP4s and side-car JSONs; returns the output folder."""
    import cv2

    from yolov5.utils.general import increment_path

    from functools import partial

    from yolov5_dattn.analysis import attention_viz
    ultralytics = attention_viz.is_ultralytics_model(model)
    if ultralytics:  # predict's own setup (a fused copy of the model), built once for every image and frame
        analyse = partial(attention_viz.analyse_ultralytics,
                          predictor=attention_viz.ultralytics_predictor(model, opt.conf_thres, opt.iou_thres))
    else:
        analyse = attention_viz.analyse
    index = {name: i for i, (name, _) in enumerate(layers)}
    chosen = layers if opt.layer is None else [layers[opt.layer]]
    for name, m in layers:
        scorer = getattr(m, "query_scorer", None)  # sparse queries: the share that attends
        sparse = "" if scorer is None else f", query_ratio {float(scorer.ratio):g}"
        print(f"DAttention layer {index[name]}: {name} ({m.n_groups} groups, {m.n_heads} heads{sparse})")
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)

    def analyse_one(img):
        result = analyse(model, img, opt.imgsz, chosen, query, opt.conf_thres, opt.iou_thres)
        for layer in result["layers"]:
            layer["index"] = index[layer["name"]]
        return result

    meta = {"weights": str(opt.weights), "imgsz": opt.imgsz, "coordinates": "original-image pixels (x, y), "
            "centre of the top-left pixel = (0, 0)", **({"host": "ultralytics"} if ultralytics else {})}
    if kind == "images":
        for path in sources:
            img = cv2.imread(str(path))
            if img is None:
                raise UserError(f"--source: cannot read image {path}: remove or replace it")
            result = analyse_one(img)
            for suffix, drawn in render(img, result, opt.group, opt.draw_scale):
                cv2.imwrite(str(save_dir / f"{path.stem}_{suffix}.png"), drawn)
            (save_dir / f"{path.stem}.json").write_text(json.dumps({**meta, "source": str(path), **result}))
    else:
        path = sources[0]
        capture = cv2.VideoCapture(str(path))
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writers, frames = {}, []
        while not opt.max_frames or len(frames) < opt.max_frames:
            ok, img = capture.read()
            if not ok:
                break
            result = analyse_one(img)
            for suffix, drawn in render(img, result, opt.group, opt.draw_scale):
                if suffix not in writers:
                    writers[suffix] = cv2.VideoWriter(str(save_dir / f"{path.stem}_{suffix}.mp4"),
                                                      cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
                writers[suffix].write(drawn)
            frames.append({"frame": len(frames), **result})
        capture.release()
        for writer in writers.values():
            writer.release()
        (save_dir / f"{path.stem}.json").write_text(json.dumps({**meta, "source": str(path), "frames": frames}))
    print(f"Results saved to {save_dir}")
    return save_dir
