"""Checks run before any work starts (stub: the resolution checks land here)."""


def preflight(opt, task: str = "detect") -> None:
    """Validate a parsed YOLOv5 option namespace before running `task` ('train', 'val', 'detect',
    'export', 'segment-train', 'segment-val', 'segment-predict'). Raises `UserError`; may adjust `opt`
    (e.g. switch off rect) after saying so."""
