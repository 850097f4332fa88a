"""Silencing YOLOv5's INFO logging, shared by the checks and the profilers."""
import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_yolov5(level: int = logging.WARNING) -> Iterator[None]:
    """Silence YOLOv5's logging below `level` (by default its INFO: the layer table printed by every model
    build) within the block."""
    logger = logging.getLogger("yolov5")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
