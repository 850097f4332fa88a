#!/usr/bin/env python
"""What does the attention cost? A model against its YOLOv5 baseline (`yolov5-dattn compare`; the logic is in
`yolov5_dattn/cli/compare.py`).

    python scripts/compare.py --cfg configs/yolov5l_c3_dattn.yaml --imgsz 640 --json out.json --plot out.png
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.compare import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
