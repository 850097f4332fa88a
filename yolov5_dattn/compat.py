"""Compatibility layer: makes the packaged YOLOv5 (7.0.14) run on today's libraries, offline.

Each shim is one small named function that fixes one measured break; `apply()` runs them all, once.
Shims that must act before `yolov5` is first imported run in `apply_before_import()`.
"""
import os
import sys
import types

_applied = False


def shim_pkg_resources() -> None:
    """setuptools ≥81 removed `pkg_resources`; yolov5 imports it only for `parse_version`."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse as parse_version
        module = types.ModuleType("pkg_resources")
        module.parse_version = parse_version
        sys.modules["pkg_resources"] = module


def shim_offline_ultralytics() -> None:
    """ultralytics (imported by yolov5) probes DNS at import unless told it is offline."""
    os.environ.setdefault("YOLO_OFFLINE", "1")


def apply_before_import() -> None:
    """Shims needed for `import yolov5` itself to work."""
    shim_pkg_resources()
    shim_offline_ultralytics()


def apply() -> None:
    """Run every shim once (idempotent)."""
    global _applied
    if _applied:
        return
    apply_before_import()
    _applied = True
