"""Whether this process runs one of our commands, whose policy (offline, safe loading, checks first) a host
adapter applies when it is installed. Set by `yolov5_dattn.cli.policy.apply()`; never by an import of the plugin.
"""
__all__ = ["request", "requested"]

_requested = False


def request() -> None:
    """Mark this process as running one of our commands."""
    global _requested
    _requested = True


def requested() -> bool:
    """True once `request()` has been called in this process."""
    return _requested
