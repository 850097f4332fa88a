"""A data YAML's `download:` line is never run: a missing dataset is an error that names the missing folder.

ultralytics' `data.utils.check_det_dataset`, when the `val:` (or split) images are missing and the YAML has a
`download:` value, fetches an `http...` archive, runs a `bash ...` value as a command, and `exec`s any other value
as Python: a data YAML someone gave the user runs code, and a dataset name reaches the network. Under the policy it
always runs with `autodownload=False`, so the same missing folder is a `FileNotFoundError` instead, with one note
that the download line was not run. Every caller (trainer, validator, exporter, YOLO-World/YOLOE, the Python API
`YOLO(...).train(data=...)`) goes through it.
"""
from typing import Callable

from yolov5_dattn import patching

__all__ = ["apply", "STEP", "WHY"]

STEP = "safe loading"
WHY = "a data YAML's download: value is exec'd as Python or run as a command when its images are missing"
NOTE = "its download: line is never run: put the dataset there yourself"


def _no_download(original: Callable) -> Callable:
    def check_det_dataset(dataset, autodownload: bool = True, split: str = ""):
        """ultralytics' check_det_dataset with autodownload off, whatever the caller asked; a missing dataset
        raises FileNotFoundError naming the missing folder (one line)."""
        try:
            return original(dataset, autodownload=False, split=split)
        except FileNotFoundError as e:
            first = next((s.strip() for s in str(e).splitlines() if s.strip()), "")
            if "missing path" not in first:
                raise
            raise FileNotFoundError(f"{first}: {NOTE}") from None
    return check_det_dataset


def apply() -> None:
    """Install the rule (idempotent): modules that imported `check_det_dataset` by name get it too."""
    from ultralytics.data import utils
    if patching.is_patched(utils, "check_det_dataset", WHY):
        return
    original = utils.check_det_dataset
    with patching.applying(STEP):
        patching.patch(utils, "check_det_dataset", _no_download(original), why=WHY,
                       also=patching.holders("check_det_dataset", original))
