"""Our commands' policy for the ultralytics host: offline, safe loading, checks before any work.

A library user who imports `yolov5_dattn.hosts.ultralytics` gets the blocks and nothing else; a user who runs one of our
commands (`yolov5-dattn ...`, `scripts/*.py`) gets this policy too. `apply()` arranges it before ultralytics is
imported (its network probe at import reads `YOLO_OFFLINE`), and calls `yolov5_dattn.hosts.ultralytics.use_policy()`
the moment ultralytics is imported, or at once when it is already.
"""
from yolov5_dattn.core import command_policy
from yolov5_dattn.core.offline_env import set_offline_environment
from yolov5_dattn.import_hook import when_imported

__all__ = ["apply"]


def _ultralytics_policy() -> None:
    import sys
    host = sys.modules.get("yolov5_dattn.hosts.ultralytics")
    if host is None or not hasattr(host, "use_policy"):
        # ultralytics is being imported by our host adapter itself: the adapter applies the policy once it is
        # installed (it asks `command_policy.requested()`)
        return
    host.use_policy()


def apply() -> None:
    """Apply our commands' policy to this process (idempotent): the offline environment now (a value the user
    set is kept), the ultralytics policy when ultralytics is imported."""
    command_policy.request()
    set_offline_environment()
    when_imported("ultralytics", lambda: None, _ultralytics_policy)
