"""Host-neutral pieces that both host adapters (`yolov5_dattn.yolov5`, `yolov5_dattn.ultralytics`) use.

Nothing here imports a host library.
"""
