"""Silencing YOLOv5's INFO logging, shared by the checks and the profilers."""
import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_yolov5() -> Iterator[None]:
    """Silence YOLOv5's INFO logging (the layer table printed by every model build) within the block."""
    logger = logging.getLogger("yolov5")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
