#!/usr/bin/env python
"""The demo: synthetic data, train, val, detect, compare (`yolov5-dattn demo`; the logic is in
`yolov5_dattn/cli/demo.py`).

    python scripts/demo.py                      # or: make demo
    python scripts/demo.py --host ultralytics   # yolo11n-c3k2-dattn through `yolov5-dattn yolo`
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.demo import main, parse_args, parse_map50  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
