#!/usr/bin/env python
"""Validate a trained detection checkpoint on a dataset (YOLOv5's val.py).

Same flags and output folders as YOLOv5's script (`--help` lists them), plus yolov5-dattn's
`--trust-checkpoint`; runs offline. Works under `python -m torch.distributed.run` like YOLOv5's.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.hosts.yolov5.entrypoint import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("val"))
