"""Where a resumed run writes: the run folder that holds the checkpoint it was given.

Both hosts resume from `<run>/weights/last.pt` but take the run folder from the options stored with the run
(YOLOv5: `opt.yaml` or the checkpoint's `opt`; ultralytics: the checkpoint's `train_args`), so a copied run writes
into the original and a crafted checkpoint writes anywhere. `run_folder` is the one rule both hosts apply instead:
`<run>/weights/last.pt` -> `<run>`, with one notice when the stored options name another folder.
"""
import os
import sys
from pathlib import Path
from typing import Optional, Union

from yolov5_dattn.errors import UserError

__all__ = ["run_folder"]


def run_folder(last: Union[str, Path], recorded: Optional[Union[str, Path]], *, asked: str, new_run: str) -> Path:
    """The run folder a resume of `last` writes to: the folder that holds `weights/last.pt`.

    Args:
        last: the checkpoint given, `<run>/weights/<name>.pt`.
        recorded: the run folder the run's stored options name ('' or None when none).
        asked: how the user named the checkpoint, to start messages ('--resume runs/a/weights/last.pt').
        new_run: the arguments that start a new run from the file instead ('--weights last.pt').
    Returns: `<run>` (the parent of `weights/`), as given (not resolved).
    Raises: UserError (one line) when `last` is not in a `weights/` folder.
    Prints to stderr one `notice:` line (on rank 0 / a single process) when `recorded` is another folder.
    """
    last = Path(last)
    if last.parent.name != "weights":
        raise UserError(f"{asked}: a resumed run writes beside its checkpoint, in <run>/weights/, but this file is "
                        f"not in a weights/ folder: copy it to <run folder>/weights/last.pt (or start a new run "
                        f"with {new_run})")
    here = last.parent.parent
    if recorded and Path(recorded).resolve() != here.resolve() and int(os.environ.get("RANK", -1)) in (-1, 0):
        print(f"notice: {asked}: the checkpoint records run folder {recorded}; writing to {here} instead "
              f"(the folder that holds the checkpoint)", file=sys.stderr)
    return here
