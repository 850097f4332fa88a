"""Write a real labelled dataset (tree crowns in airborne images) from the sample data a PyPI package ships.

    pip download deepforest==2.1.0 --no-deps -d downloads/
    yolov5-dattn make-real-data downloads/deepforest-2.1.0-py3-none-any.whl --root data/deepforest --tile 256
    yolov5-dattn make-real-data --download --root data/deepforest     # runs that pip download itself
    python scripts/convert_deepforest.py ...                          # the same, from a checkout

Then `yolov5-dattn train --data data/deepforest/deepforest.yaml --imgsz 256 ...` or
`yolov5-dattn yolo train data=data/deepforest/deepforest.yaml imgsz=256 ...`. How the images are split and tiled:
`yolov5_dattn.real_data`. Deterministic: the same archive and flags write the same files.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from yolov5_dattn.errors import UserError, one_line

__all__ = ["parse_args", "main", "download"]


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line of `make-real-data` (default sys.argv[1:])."""
    from yolov5_dattn.real_data import SOURCES
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("archive", nargs="?", default=None,
                   help="the package's wheel or sdist, as `pip download <package>==<version> --no-deps` writes it")
    p.add_argument("--download", action="store_true",
                   help="run `pip download <package>==<version> --no-deps` (a package registry is needed) instead "
                        "of giving ARCHIVE")
    known = ", ".join(f"{k} ({s.package} {s.version}, {s.licence} licence)" for k, s in SOURCES.items())
    p.add_argument("--source", default="deepforest", help=f"which package's images: {known}")
    p.add_argument("--root", default="data/deepforest", help="output folder (new, empty, or written by this command)")
    p.add_argument("--tile", type=int, default=256, help="tile side in px; train at an --imgsz near it")
    p.add_argument("--overlap", type=float, default=0.5, help="overlap of neighbouring train tiles (val: none)")
    p.add_argument("--val-fraction", type=float, default=0.3, help="bottom fraction of each image's rows kept for val")
    p.add_argument("--min-visible", type=float, default=0.25,
                   help="fraction of a box's area a tile must hold to label it (clipped)")
    return p.parse_args(argv)


def download(package: str, version: str, folder: Path) -> Path:
    """`pip download package==version --no-deps` into `folder`; the wheel or sdist it wrote."""
    cmd = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps", "--disable-pip-version-check",
           "-d", str(folder)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(f"{package}-{version}*"))
    if result.returncode != 0 or not found:
        last = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise UserError(f"--download: `pip download {package}=={version} --no-deps` failed "
                        f"({last[-1].strip() if last else f'exit {result.returncode}'}): download it where a package "
                        f"registry is reachable and pass the file as ARCHIVE")
    return found[0]


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Convert and list what was written; returns the exit status (2 with `error: ...` for bad input)."""
    args = parse_args(argv, prog)
    from yolov5_dattn.real_data import SOURCES, convert
    try:
        if args.source not in SOURCES:
            raise UserError(f"--source {args.source} is unknown: use {' or '.join(f'--source {k}' for k in SOURCES)}")
        if (args.archive is None) == (not args.download):
            raise UserError("give the package's wheel or sdist as ARCHIVE, or --download (not both)")
        src = SOURCES[args.source]
        with tempfile.TemporaryDirectory(prefix="make-real-data-") as tmp:
            archive = download(src.package, src.version, Path(tmp)) if args.download else Path(args.archive)
            record = convert(archive, args.root, src, tile=args.tile, overlap=args.overlap,
                             val_fraction=args.val_fraction, min_visible=args.min_visible)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    c = record["counts"]
    print(f"{record['package']} {record['version']} ({record['licence']} licence): {len(record['images'])} images, "
          f"{sum(i['boxes'] for i in record['images'].values())} boxes -> {args.tile}-px tiles: "
          f"train {c['train']['tiles']} tiles / {c['train']['boxes']} boxes, "
          f"val {c['val']['tiles']} tiles / {c['val']['boxes']} boxes")
    print(f"  data_yaml  {record['data_yaml']}")
    return 0
