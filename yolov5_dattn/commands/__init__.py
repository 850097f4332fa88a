"""The commands of `yolov5-dattn` that are ours rather than YOLOv5's (compare, visualize, demo, make-demo-data).

Each module has `main(argv=None, prog=None) -> int` (the exit status); `yolov5_dattn.cli` dispatches to them
and the checkout's `scripts/*.py` are thin wrappers around the same functions.
"""
