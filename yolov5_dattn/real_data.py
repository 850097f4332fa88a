"""A real labelled detection dataset from the sample images a PyPI package ships, tiled into YOLO format.

The `deepforest` package (2.1.0, MIT licence, Ben Weinstein / weecology) ships airborne RGB orthophotos of
forests (NEON sites YELL, OSBS, SOAP) with every tree crown boxed in Pascal VOC XML: 951 boxes over four
images of 400×400 to 2299×2472 px, crowns of about 15-75 px. Small, dense objects on a textured background:
real data where attention at P3/P4 has something to do. The images are not copied into this repository; the
package's wheel or sdist (`pip download deepforest==2.1.0 --no-deps`) is read here and converted.

    convert("deepforest-2.1.0-py3-none-any.whl", "data/deepforest", tile=256)

Conversion, deterministic (the same archive and arguments write the same bytes):
- every XML under the package's data folder is one image; its <object>s are the boxes (all classes map to one,
  "tree": the package labels crowns "Tree", and one image "Alive"/"Dead");
- each image is split into two bands: its top rows are train, its bottom `val_fraction` of rows is val, so no
  val pixel is ever seen in training (an image whose val band would be under half a tile is train only);
- each band is cut into `tile`-px tiles: train tiles overlap by `overlap` (more crops of the same crowns),
  val tiles do not (each crown is counted about once); the last tile of a row or column is aligned to the band's
  edge, and a band smaller than a tile gives tiles of the band's size;
- a box is kept in a tile, clipped, when at least `min_visible` of its area lies inside and the clipped box is
  2 px or more on each side; a crown cut by a band edge is in both bands, clipped.

Layout under `root` (built in a temp folder beside it and renamed into place: never half written):
    images/{train,val}/<image>_y<top>_x<left>.png   labels/{train,val}/<same>.txt  (class cx cy w h, normalised)
    <source>.yaml   data YAML for YOLOv5 and ultralytics (absolute `path:`)
    source.json     package, version, licence, archive sha256, settings, counts
    LICENSE.<package>  the package's licence text, shipped with its images
"""
import contextlib
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np
import yaml

from yolov5_dattn.errors import UserError

__all__ = ("Source", "SOURCES", "Annotated", "read_archive", "tile_starts", "tile_boxes", "yolo_lines",
           "convert")

MARKER = "yolov5_dattn.real_data"  # source.json's "written_by": a folder we may replace


@dataclass(frozen=True)
class Source:
    """A package that ships labelled images: where they are in its archive and how its labels map to classes."""
    package: str
    version: str  # the version converted and measured in docs/accuracy.md
    licence: str
    data_dir: str  # folder of the VOC XMLs and images inside the wheel ("<pkg>/data"; an sdist adds a prefix)
    classes: Dict[str, int] = field(default_factory=dict)  # VOC <name> -> class index
    names: Tuple[str, ...] = ()


SOURCES: Dict[str, Source] = {
    "deepforest": Source(package="deepforest", version="2.1.0", licence="MIT", data_dir="deepforest/data",
                         classes={"Tree": 0, "Alive": 0, "Dead": 0}, names=("tree",)),
}


@dataclass
class Annotated:
    """One labelled image: `image` (H, W, 3) uint8 BGR, `boxes` (N, 4) float pixels x0 y0 x1 y1, `classes` (N,)."""
    name: str
    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


# ---- reading the archive ---------------------------------------------------------------------------------------
class _Archive:
    """Read-only member access to a wheel (zip) or an sdist (tar.gz); nothing is extracted to disk."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise UserError(f"{path}: no such file: give the wheel or sdist that "
                            f"`pip download <package>==<version> --no-deps` writes, or use --download")
        if zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self.names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            self._zip = None
            try:
                self._tar = tarfile.open(path, "r:*")
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as e:
                raise UserError(f"{path}: not a wheel (zip) or an sdist (tar.gz): {e}: give the file that "
                                f"`pip download` writes") from None
            self.names = list(self._members)

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        f = self._tar.extractfile(self._members[name])
        return f.read()

    def close(self) -> None:
        (self._zip or self._tar).close()


@contextlib.contextmanager
def _quiet_opencv():
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _metadata(archive: _Archive) -> Tuple[str, str]:
    """(version, licence text) from the wheel's METADATA or the sdist's PKG-INFO and LICENSE ('' when absent)."""
    version = ""
    for name in sorted(archive.names):
        p = PurePosixPath(name)
        if p.name in ("METADATA", "PKG-INFO") and len(p.parts) == 2:
            text = archive.read(name).decode("utf-8", "replace")
            found = re.search(r"^Version:\s*(\S+)", text, re.M)
            if found:
                version = found.group(1)
                break
    licences = sorted(n for n in archive.names if PurePosixPath(n).name in ("LICENSE", "LICENSE.txt", "LICENSE.md")
                      and len(PurePosixPath(n).parts) <= 3)
    licence = archive.read(licences[0]).decode("utf-8", "replace") if licences else ""
    return version, licence


def _parse_voc(xml: bytes, where: str, source: Source) -> Tuple[str, Tuple[int, int], np.ndarray, np.ndarray]:
    """(image file name, (W, H), boxes (N, 4), classes (N,)) of one Pascal VOC annotation."""
    try:
        root = ET.fromstring(xml)
        filename = root.findtext("filename", "").strip()
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
        boxes, classes = [], []
        for obj in root.iter("object"):
            label = obj.findtext("name", "").strip()
            if label not in source.classes:
                raise ValueError(f"label {label!r} is not one of {', '.join(source.classes)}")
            boxes.append([float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
            classes.append(source.classes[label])
    except (ET.ParseError, TypeError, ValueError) as e:
        raise UserError(f"{where}: not a Pascal VOC annotation this converter reads ({e}): "
                        f"use the {source.package} archive as published") from None
    if not filename:
        raise UserError(f"{where}: no <filename>: use the {source.package} archive as published")
    return filename, size, np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, np.int64)


def read_archive(path: Union[str, Path], source: Source) -> Tuple[Dict[str, str], List[Annotated]]:
    """The labelled images of `source` inside the wheel or sdist at `path`, sorted by name.

    Returns ({"version", "licence_text", "sha256"}, [Annotated, ...]). Raises UserError (naming the archive and
    the member) when the file is no archive, holds no annotations under `source.data_dir`, or an annotation names
    an image the archive lacks or whose size differs from the annotation's.
    """
    path = Path(path)
    archive = _Archive(path)
    try:
        version, licence = _metadata(archive)
        # a wheel stores "deepforest/data/x.xml", an sdist "deepforest-2.1.0/src/deepforest/data/x.xml"
        in_data = {n: PurePosixPath(n) for n in archive.names
                   if ("/" + str(PurePosixPath(n).parent)).endswith("/" + source.data_dir)}
        xmls = sorted(n for n, p in in_data.items() if p.suffix.lower() == ".xml")
        if not xmls:
            raise UserError(f"{path}: no Pascal VOC annotations (*.xml) under {source.data_dir}/: give the "
                            f"{source.package} wheel or sdist (pip download {source.package}=={source.version} "
                            f"--no-deps)")
        items = []
        for xml_name in xmls:
            where = f"{path}:{xml_name}"
            filename, (w, h), boxes, classes = _parse_voc(archive.read(xml_name), where, source)
            image_name = str(PurePosixPath(xml_name).parent / filename)
            if image_name not in in_data:
                raise UserError(f"{where} names image {filename}, which the archive lacks: use the "
                                f"{source.package} archive as published")
            with _quiet_opencv():  # GeoTIFF tags make OpenCV's TIFF reader warn; the pixels are read all the same
                img = cv2.imdecode(np.frombuffer(archive.read(image_name), np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise UserError(f"{path}:{image_name}: not an image OpenCV can read")
            if img.shape[:2] != (h, w):
                raise UserError(f"{path}:{image_name} is {img.shape[1]}x{img.shape[0]} px but {xml_name} says "
                                f"{w}x{h}: the boxes would not fit it")
            boxes = np.clip(boxes, 0, [w, h, w, h])
            items.append(Annotated(PurePosixPath(xml_name).stem, img, boxes, classes))
    finally:
        archive.close()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"version": version, "licence_text": licence, "sha256": sha}, items


# ---- tiling -----------------------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """Tile starts covering [0, length): every `stride` px, the last one aligned to the end ([0] when
    length <= tile; that tile is then `length` long)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_boxes(boxes: np.ndarray, window: Tuple[int, int, int, int], min_visible: float) -> np.ndarray:
    """Boxes (N, 4) x0 y0 x1 y1 clipped to `window` (x0, y0, x1, y1) and shifted to its origin; keeps the rows
    with at least `min_visible` of their area inside and 2 px or more a side. Returns (M, 5): index, x0 y0 x1 y1."""
    wx0, wy0, wx1, wy1 = window
    clipped = np.stack([np.clip(boxes[:, 0], wx0, wx1), np.clip(boxes[:, 1], wy0, wy1),
                        np.clip(boxes[:, 2], wx0, wx1), np.clip(boxes[:, 3], wy0, wy1)], 1)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (cw >= 2) & (ch >= 2) & (cw * ch >= min_visible * np.maximum(area, 1e-9))
    index = np.nonzero(keep)[0]
    return np.concatenate([index[:, None].astype(np.float64), clipped[keep] - [wx0, wy0, wx0, wy0]], 1)


def yolo_lines(classes: np.ndarray, boxes: np.ndarray, w: int, h: int) -> List[str]:
    """YOLO label lines `class cx cy bw bh` (normalised by the tile's w, h) of boxes (N, 4) in tile pixels."""
    lines = []
    for c, (x0, y0, x1, y1) in zip(classes, boxes):
        lines.append(f"{int(c)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                     f"{(y1 - y0) / h:.6f}")
    return lines


def _bands(h: int, tile: int, val_fraction: float) -> Dict[str, Tuple[int, int]]:
    """Row ranges {split: (top, bottom)}: val is the bottom `val_fraction` of rows unless under half a tile."""
    val_rows = int(round(h * val_fraction))
    if val_rows < tile // 2:
        return {"train": (0, h)}
    return {"train": (0, h - val_rows), "val": (h - val_rows, h)}


def _write_tiles(item: Annotated, out: Path, tile: int, overlap: float, val_fraction: float,
                 min_visible: float, counts: Dict[str, Dict[str, int]]) -> None:
    h, w = item.image.shape[:2]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
    for split, (top, bottom) in _bands(h, tile, val_fraction).items():
        stride = tile if split == "val" else max(1, int(round(tile * (1 - overlap))))
        for ty in tile_starts(bottom - top, tile, stride):
            for tx in tile_starts(w, tile, stride):
                y0, x0 = top + ty, tx
                y1, x1 = min(y0 + tile, bottom), min(x0 + tile, w)
                kept = tile_boxes(item.boxes, (x0, y0, x1, y1), min_visible)
                name = f"{stem}_y{y0:05d}_x{x0:05d}"
                ok, png = cv2.imencode(".png", item.image[y0:y1, x0:x1])
                if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
                    raise RuntimeError("OpenCV failed to encode PNG")
                (out / "images" / split / f"{name}.png").write_bytes(png.tobytes())
                lines = yolo_lines(item.classes[kept[:, 0].astype(int)], kept[:, 1:], x1 - x0, y1 - y0)
                (out / "labels" / split / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
                counts[split]["tiles"] += 1
                counts[split]["boxes"] += len(lines)
                counts[split]["empty"] += not lines


def _check_root(root: Path) -> None:
    """`root` may be absent, empty, or a folder this converter wrote (then it is replaced)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root} is a file: choose a folder")
    if root.is_dir() and any(root.iterdir()):
        try:
            ours = json.loads((root / "source.json").read_text(encoding="utf-8")).get("written_by") == MARKER
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"--root {root} exists and holds files this converter did not write: choose an empty "
                            f"or new folder")


def convert(archive: Union[str, Path], root: Union[str, Path], source: Union[str, Source] = "deepforest",
            tile: int = 256, overlap: float = 0.5, val_fraction: float = 0.3, min_visible: float = 0.25) -> dict:
    """Convert `source`'s labelled images in the wheel/sdist `archive` into a YOLO dataset under `root`.

    Args:
        archive: the package's wheel or sdist (`pip download deepforest==2.1.0 --no-deps`).
        root: output folder: new, empty, or one this function wrote (replaced as a whole).
        source: a key of SOURCES or a Source.
        tile: tile side in px (>= 32); train at an --imgsz near it so crowns keep their pixel size.
        overlap: train tiles' overlap in [0, 0.9]; val tiles never overlap.
        val_fraction: bottom fraction of each image's rows that is val, in (0, 1).
        min_visible: fraction of a box's area that must lie inside a tile for the tile to label it, in (0, 1].
    Returns:
        the dict written to source.json: {"package", "version", "licence", "sha256", "settings", "counts"
        ({split: {"tiles", "boxes", "empty"}}), "images", "data_yaml" (absolute path), ...}.
    Raises:
        UserError for a bad archive, argument or --root; nothing is written then.
    """
    src = SOURCES[source] if isinstance(source, str) else source
    for name, value, ok, want in (("tile", tile, tile >= 32, ">= 32"), ("overlap", overlap, 0 <= overlap <= 0.9,
                                  "in [0, 0.9]"), ("val-fraction", val_fraction, 0 < val_fraction < 1, "in (0, 1)"),
                                  ("min-visible", min_visible, 0 < min_visible <= 1, "in (0, 1]")):
        if not ok:
            raise UserError(f"--{name} {value} is out of range: use a value {want}")
    root = Path(root).resolve()
    _check_root(root)
    meta, items = read_archive(archive, src)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for sub in ("images", "labels"):
            for split in ("train", "val"):
                (tmp / sub / split).mkdir(parents=True)
        counts = {split: {"tiles": 0, "boxes": 0, "empty": 0} for split in ("train", "val")}
        for item in items:
            _write_tiles(item, tmp, tile, overlap, val_fraction, min_visible, counts)
        if counts["val"]["tiles"] == 0:
            raise UserError(f"--val-fraction {val_fraction} leaves no val tiles with --tile {tile}: use a larger "
                            f"--val-fraction or a smaller --tile")
        data_yaml = root / f"{src.package}.yaml"
        data = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(src.names))}
        (tmp / data_yaml.name).write_text(
            f"# written by {MARKER}: {src.package} {meta['version']} ({src.licence} licence), tiles of {tile} px\n"
            + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        if meta["licence_text"]:
            (tmp / f"LICENSE.{src.package}").write_text(meta["licence_text"], encoding="utf-8")
        record = {"written_by": MARKER, "package": src.package, "version": meta["version"], "licence": src.licence,
                  "archive": Path(archive).name, "sha256": meta["sha256"],
                  "settings": {"tile": tile, "overlap": overlap, "val_fraction": val_fraction,
                               "min_visible": min_visible},
                  "images": {item.name: {"width": int(item.image.shape[1]), "height": int(item.image.shape[0]),
                                         "boxes": int(len(item.boxes))} for item in items},
                  "counts": counts, "names": list(src.names), "data_yaml": str(data_yaml)}
        (tmp / "source.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if root.exists():  # ours (checked above): swap the new folder in, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / root.name)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record
