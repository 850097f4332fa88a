#!/usr/bin/env python
"""Does the attention help? Train each --cfg and its stock YOLOv5 baseline under identical settings and write
one accuracy/cost table (`yolov5-dattn ablate`; the logic is in `yolov5_dattn/cli/ablate.py`).

    python scripts/ablate.py --data configs/demo_shapes.yaml --cfg configs/yolov5n_c3_dattn_ls.yaml \
        --epochs 12 --imgsz 160 --seeds 0 1 2 --hyp configs/hyp.demo.yaml --optimizer AdamW
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolov5_dattn.cli.ablate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="scripts/ablate.py"))
