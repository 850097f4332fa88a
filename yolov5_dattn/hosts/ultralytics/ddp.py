"""Multi-GPU workers (`device=0,1`) get our blocks, and our policy when the launching process had it.

ultralytics trains on several GPUs by writing the trainer's state with cloudpickle (`utils.dist.generate_ddp_file`:
the trainer class, its arguments, its model and its callbacks) and starting one fresh Python per GPU through
`torch.distributed.run`; each worker unpickles that state and trains. Nothing of ours is imported in a worker
unless the state names it. When the model is a nn.Module holding our blocks it does (classes pickle by reference),
but a run from a YAML (`YOLO("yolo11n-c3k2-dattn.yaml").train(device="0,1")`) pickles the YAML's *name*, and the
worker's `parse_model` then fails on `C3k2_DAttention`.

The seam: `generate_ddp_file` writes the state with one more entry in the trainer's callbacks, a `WorkerSetup`.
Unpickling it in the worker calls `worker_setup`, which imports this package (our blocks join parse_model), sets
the feature-map checks' square validation of a `fixed_pe` run, and when the launching process ran under
`use_policy()` applies the same policy there (offline, safe loading, ...), all before the worker builds its
trainer. The entry is taken out of the launching trainer's callbacks again once the file is written. The feature-map checks themselves
run once, in the launching process (`Model.train`), before any worker starts; their argument changes (`rect`,
`multi_scale`) reach the workers in the pickled arguments.

Why the worker's full-pickle load of that state is trusted: ultralytics writes it a moment before, with the
launching user's own permissions, under that user's config folder (`USER_CONFIG_DIR/DDP`), and deletes it when the
run ends (`ddp_cleanup`). It is the trainer's own state, never a file a user was given. The worker reads it before
any of our code is imported, through ultralytics' own `torch_load`.
"""
from typing import Callable

from yolov5_dattn import patching

__all__ = ["WorkerSetup", "apply", "worker_setup", "EVENT", "STEP"]

STEP = "ddp workers"
WHY = ("ultralytics' multi-GPU workers rebuild the trainer from a pickled state that need not name our blocks: "
       "it names them, and the launching process's policy")
EVENT = "on_pretrain_routine_start"  # a callback event every trainer has; the entry itself does nothing there


class WorkerSetup:
    """A trainer-callback entry that, unpickled in a DDP worker, sets the worker up as the launching process was.

    Args:
        policy: the launching process ran under `yolov5_dattn.hosts.ultralytics.use_policy()`;
        square_val: a `fixed_pe` training run whose validation the feature-map checks made square.
    """

    def __init__(self, policy: bool, square_val: bool):
        self.policy, self.square_val = bool(policy), bool(square_val)

    def __call__(self, trainer) -> None:
        """As a callback: nothing (the work is done when the worker unpickles it)."""

    def __reduce__(self):
        return worker_setup, (self.policy, self.square_val)

    def __repr__(self) -> str:
        return f"WorkerSetup(policy={self.policy}, square_val={self.square_val})"


def worker_setup(policy: bool, square_val: bool) -> WorkerSetup:
    """Run in a worker as it unpickles the trainer's state: install the plugin (importing the package does: our
    blocks join parse_model), apply the launching process's policy if it had it, and square validation for a
    fixed_pe run. Returns the entry."""
    import yolov5_dattn.hosts.ultralytics as host
    from . import fmap_checks
    if policy:
        host.use_policy()
    fmap_checks.square_validation(square_val)
    return WorkerSetup(policy, square_val)


def _current() -> WorkerSetup:
    """The entry describing this (launching) process, inside its `Model.train`."""
    import yolov5_dattn.hosts.ultralytics as host
    from . import fmap_checks
    return WorkerSetup(host.policy_applied(), fmap_checks.square_validation())


def _generate_ddp_file(original: Callable) -> Callable:
    def generate_ddp_file(trainer):
        """ultralytics' generate_ddp_file, with a `WorkerSetup` among the pickled callbacks (see this module)."""
        entry, callbacks = _current(), trainer.callbacks
        added = EVENT not in callbacks
        callbacks.setdefault(EVENT, []).append(entry)
        try:
            return original(trainer)
        finally:
            callbacks[EVENT].remove(entry)
            if added:
                del callbacks[EVENT]
    return generate_ddp_file


def apply() -> None:
    """Install the seam on `ultralytics.utils.dist.generate_ddp_file` (idempotent)."""
    from ultralytics.utils import dist
    if patching.is_patched(dist, "generate_ddp_file", WHY):
        return
    with patching.applying(STEP):
        patching.patch(dist, "generate_ddp_file", _generate_ddp_file(dist.generate_ddp_file), why=WHY)
