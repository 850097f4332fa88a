#!/usr/bin/env python
"""Convert the labelled tree-crown images shipped in the `deepforest` wheel/sdist (2.1.0, MIT) into a tiled
YOLO dataset (`yolov5-dattn make-real-data`; the logic is in `yolov5_dattn/real_data.py`).

    pip download deepforest==2.1.0 --no-deps -d downloads/
    python scripts/convert_deepforest.py downloads/deepforest-2.1.0-py3-none-any.whl --root data/deepforest
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.make_real_data import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())  # --source deepforest is the default
