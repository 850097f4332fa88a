#!/usr/bin/env python
"""Where does the deformable attention look? Draw it over images or a video, DAT Figs. 6 and 7
(`yolov5-dattn visualize`; the logic is in `yolov5_dattn/cli/visualize.py`).

    python scripts/visualize_attention.py --weights runs/train/exp/weights/best.pt --source img.jpg \
        --imgsz 640 --query 320,200
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.visualize import list_sources, main, parse_args, parse_query, render, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
