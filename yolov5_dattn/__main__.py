"""`python -m yolov5_dattn ...` is the `yolov5-dattn` command (see `yolov5_dattn.cli`)."""
import sys

from yolov5_dattn.cli import main

if __name__ == "__main__":
    sys.exit(main())
