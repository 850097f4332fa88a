"""Ultralytics without the network: no font or weight download, no AMP-check download, no pip auto-install,
no online probe or telemetry.

ultralytics reaches out on its own: `is_online()` resolves DNS names at import (unless `YOLO_OFFLINE` is set),
`check_font` downloads Arial.ttf for label plots, `check_amp` downloads yolo26n.pt on CUDA (replaced by the same
comparison on the model being trained: `amp_check`, so AMP stays on), `check_requirements`
runs pip for a missing exporter dependency, and settings-driven events are sent while `ONLINE` is true; and OpenVINO (`format=openvino`) sends telemetry to
Google Analytics from `openvino_telemetry`, whatever ultralytics says. Each of
these is replaced through `yolov5_dattn.patching` (also in the modules that imported it by name), so the same
code runs whether ultralytics was imported before or after us.
"""
from yolov5_dattn import patching
from yolov5_dattn.core.offline import local_font, never_installs
from yolov5_dattn.import_hook import when_imported
from .amp_check import check_amp_offline

__all__ = ["STEP", "apply", "check_font"]

STEP = "offline"


def check_font(font: str = "Arial.ttf"):
    """ultralytics' `check_font` without the download: the font from ultralytics' config dir or already on disk
    (`yolov5_dattn.core.offline.local_font`); None only without matplotlib (the Annotator then uses PIL's)."""
    from ultralytics.utils import USER_CONFIG_DIR
    return local_font(font, USER_CONFIG_DIR)


def _silence_openvino() -> None:
    from openvino_telemetry.utils.sender import TelemetrySender

    def send(self, backend, message):
        """openvino_telemetry's sender, sending nothing."""
    with patching.applying(STEP):
        patching.patch(TelemetrySender, "send", send, why="OpenVINO's export sends telemetry (Google Analytics)")


def apply() -> None:
    """Make the loaded ultralytics offline (idempotent)."""
    import ultralytics.utils as utils
    import ultralytics.utils.checks as checks
    # the modules that import these by name at their import: loaded now, so `also=` reaches them
    import ultralytics.data.utils  # noqa: F401
    import ultralytics.engine.exporter  # noqa: F401
    import ultralytics.engine.trainer  # noqa: F401
    import ultralytics.utils.plotting  # noqa: F401

    with patching.applying(STEP):
        for name, make in (("check_font", lambda original: check_font),
                           ("check_requirements", never_installs),
                           ("check_amp", check_amp_offline)):
            original = getattr(checks, name)
            patching.patch(checks, name, make(original), also=patching.holders(name, original, "ultralytics"),
                           why=f"ultralytics' {name} would reach the network (download / pip)")
        when_imported("openvino_telemetry", lambda: None, _silence_openvino)  # at its import: it is slow to import
        patching.patch(utils, "ONLINE", False, also=patching.holders("ONLINE", utils.ONLINE, "ultralytics"),
                       why="ultralytics probes the network and sends events while ONLINE is true")
