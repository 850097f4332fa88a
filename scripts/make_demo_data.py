#!/usr/bin/env python
"""Write the synthetic shapes dataset (detection + segmentation), a short video and their data YAMLs
(`yolov5-dattn make-demo-data`; the logic is in `yolov5_dattn/cli/make_demo_data.py`).

    python scripts/make_demo_data.py --root demo/data --n-train 256 --n-val 64 --imgsz 128
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.make_demo_data import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
