"""`pretrained=<file>` of a training run, read before ultralytics creates the run folder.

ultralytics' trainer reads `pretrained=` in `setup_model`, after its `__init__` has made `runs/<task>/<name>`
(args.yaml, weights/): a missing, damaged or unsafe checkpoint then fails with a half-made run folder left
behind. `check_pretrained` loads it first, the same way (`load_checkpoint`, with the restricted loading this
plugin installs), and turns a failure into one `UserError` naming the key. Called from the train seam
(`fmap_checks`), before the feature-map checks.
"""
import re
from pathlib import Path
from typing import Any, Mapping

from yolov5_dattn.errors import UserError


class PretrainedError(UserError):
    """`pretrained=` names a file that cannot be trained from."""


def message(e: BaseException) -> str:
    """The first non-blank line of an ultralytics error, without its 'ERROR ❌️' decoration."""
    line = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
    return re.sub(r"^ERROR\s*\S*\s*", "", line)


def check_pretrained(args: Mapping[str, Any]) -> None:
    """Refuse (PretrainedError) a `pretrained=` path that is missing or that ultralytics' loader refuses.

    Args: args, the run's merged arguments (`pretrained` True/False or a path); a resumed run is not checked."""
    value = args.get("pretrained")
    if not isinstance(value, (str, Path)) or args.get("resume") or str(value).lower() in ("true", "false"):
        return
    path = Path(value)
    if not path.is_file():
        raise PretrainedError(f"pretrained={value}: no such file: give a checkpoint (.pt) path, "
                              f"or pretrained=False to start from scratch")
    from ultralytics.nn.tasks import load_checkpoint
    try:
        load_checkpoint(str(path))
    except Exception as e:  # unsafe (restricted loading refused it), damaged, not a checkpoint
        raise PretrainedError(f"pretrained={value}: {message(e)}") from None
