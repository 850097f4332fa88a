"""The environment that keeps ultralytics' import offline: part of our commands' policy, never of an import.

ultralytics resolves DNS names when it is imported (`is_online()`) unless `YOLO_OFFLINE` is set; YOLOv5's master
layout imports ultralytics too. So a command sets this before either is imported.
"""
import os

__all__ = ["OFFLINE_ENV", "set_offline_environment"]

OFFLINE_ENV = {"YOLO_OFFLINE": "1"}


def set_offline_environment() -> None:
    """Set `OFFLINE_ENV` in `os.environ`, keeping any value the user set."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
