"""`yolo train resume model=<run>/weights/last.pt` writes only into `<run>`.

ultralytics' `BaseTrainer.check_resume` replaces the run's arguments by the checkpoint's `train_args`, `save_dir`
included, and the trainer's `__init__` then makes that folder and writes `args.yaml`, the weights and the results
there: a copied run writes into the original, a crafted `last.pt` anywhere. After ultralytics' own check, the
run folder becomes the one that holds the checkpoint (`core.resume_dir.run_folder`, the rule the YOLOv5 host
applies too), with one `notice:` line when the checkpoint names another; a checkpoint outside a `weights/` folder
is refused in one line before any folder is made.
"""
from pathlib import Path

from yolov5_dattn import patching
from yolov5_dattn.core.resume_dir import run_folder

__all__ = ["STEP", "WHY", "apply"]

STEP = "resume beside the checkpoint"
WHY = "resume takes save_dir from the checkpoint's train_args, so a crafted last.pt makes the run write anywhere"


def _beside_the_checkpoint(check_resume):
    def resume_beside_the_checkpoint(self, overrides):
        """ultralytics' check, then `args.save_dir` = the run folder of the checkpoint being resumed."""
        check_resume(self, overrides)
        if self.resume:
            last = Path(self.args.resume)  # the file ultralytics resolved and will load
            self.args.save_dir = str(run_folder(last, getattr(self.args, "save_dir", None),
                                                asked=f"resume model={last}", new_run=f"model={last} without resume"))
    return resume_beside_the_checkpoint


def apply() -> None:
    """Make a resumed training write beside its checkpoint (idempotent)."""
    from ultralytics.engine.trainer import BaseTrainer
    with patching.applying(STEP):
        patching.patch(BaseTrainer, "check_resume", _beside_the_checkpoint(BaseTrainer.check_resume), why=WHY)
