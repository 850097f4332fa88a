#!/usr/bin/env python
"""ultralytics' `yolo` command with the DAttention blocks (`yolov5-dattn yolo`; the logic is in
`yolov5_dattn/cli/yolo.py`).

    python scripts/yolo.py train model=configs/ultralytics/yolo11n-c3k2-dattn.yaml data=data.yaml epochs=1 imgsz=160
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.yolo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
