"""The host adapters: `hosts.yolov5` (YOLOv5 7.0.14 and its clones) and `hosts.ultralytics` (ultralytics 8.4).

Each is a thin adapter over `yolov5_dattn.core`: how the host's parse_model learns our names, where its run
seam is, its step table (`changes.py`) and, for YOLOv5, its repairs (`repairs.py`). Users import them by their
public names, `yolov5_dattn.yolov5` and `yolov5_dattn.ultralytics` (`public_names`).
"""
__all__: list = []
