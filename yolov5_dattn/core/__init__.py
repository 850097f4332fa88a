"""Host-neutral pieces that both host adapters (`yolov5_dattn.hosts.yolov5`, `yolov5_dattn.hosts.ultralytics`) use.

Nothing here imports a host library.
"""
