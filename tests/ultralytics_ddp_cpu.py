"""ultralytics' multi-GPU launch (`device=0,1`), run on a CPU machine: the helper of tests/ultralytics/test_ultralytics_ddp.py.

ultralytics decides on DDP from the device string (`BaseTrainer.__init__`: world_size = the number of CUDA devices
named, 0 on CPU) and its workers set themselves up for CUDA and NCCL (`BaseTrainer._setup_ddp`, then
`DistributedDataParallel(device_ids=[cuda index])`). `CpuDDPTrainer` changes exactly those two places:

- it takes world_size = `WORLD` and launches workers as `device=0,1` would (`ddp = LOCAL_RANK == -1`);
- each worker joins a gloo process group on the CPU, and its DDP wrapper is given no device ids.

Everything else is ultralytics' own: `Model.train` (with our feature-map checks), `BaseTrainer.train`'s DDP branch,
`generate_ddp_command` / `generate_ddp_file` (cloudpickle, under the user's config folder), `torch.distributed.run`,
the generated worker file's `torch_load` of the trainer state, the worker's `_do_train`, and `ddp_cleanup`.

The class is importable (`PYTHONPATH` = tests/), so the state names it by reference and the workers import it.
`report` (a trainer callback, pickled by reference too) writes what each worker saw at its first batch (one batch
each: 4 of the 8 images, `fraction=0.5`, batch 4 split over 2 workers).

Run: `YOLO_OFFLINE=1 PYTHONPATH=tests python -c "import ultralytics_ddp_cpu as d; d.launch(cfg, data, project, out)"`
(YOLO_OFFLINE as our commands set it before ultralytics is imported).
"""
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOCAL_RANK, RANK

__all__ = ["CpuDDPTrainer", "StandInTrainer", "launch", "report"]


class _CpuDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP for CPU modules: the trainer passes `device_ids=[device.index]`, which a CPU module must not get."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module, device_ids=None, **kwargs)


class CpuDDPTrainer(DetectionTrainer):
    """DetectionTrainer launching `WORLD` DDP workers on the CPU, with gloo."""

    WORLD = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world_size = self.WORLD  # what device="0,1" gives
        self.ddp = LOCAL_RANK == -1  # the launching process spawns workers; a worker trains

    def _setup_ddp(self):
        """The worker's process group: gloo on the CPU in place of NCCL on cuda:LOCAL_RANK."""
        dist.init_process_group("gloo", rank=RANK, world_size=self.world_size)
        self.device = torch.device("cpu")
        torch.nn.parallel.DistributedDataParallel = _CpuDDP  # this worker process only

    def optimizer_step(self):
        """ultralytics' step; the first DAttention's all-reduced gradient is kept for `report` (the step clears it)."""
        from yolov5_dattn.nn.dattention import DAttention
        first = next(m for m in self.model.modules() if isinstance(m, DAttention))
        if not hasattr(self, "first_grad"):
            self.first_grad = first.proj_q.weight.grad.detach().clone()
        super().optimizer_step()

    def final_eval(self):
        """Skipped: a DDP worker's final validation picks the current CUDA device (ultralytics' validator)."""

    def preprocess_batch(self, batch):
        """ultralytics' preprocessing; the batch is kept for `report`."""
        self.last_batch = super().preprocess_batch(batch)
        return self.last_batch


def report(trainer) -> None:
    """on_train_batch_end, first batch only: write `rank<N>.json` and `rank<N>.pt` into $DDP_REPORT."""
    out = Path(os.environ["DDP_REPORT"])
    if (out / f"rank{RANK}.json").exists():
        return
    import yolov5_dattn.hosts.ultralytics as host
    from ultralytics.nn import tasks
    from ultralytics.utils import ONLINE
    from yolov5_dattn import patching
    from yolov5_dattn.nn.dattention import DAttention
    from yolov5_dattn.hosts.ultralytics import fmap_checks

    wrapped = trainer.model
    model = wrapped.module if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) else wrapped
    attention = [m for m in model.modules() if isinstance(m, DAttention)]
    torch.save({"grad": trainer.first_grad, "weight": attention[0].proj_q.weight.detach().clone()},
               out / f"rank{RANK}.pt")
    (out / f"rank{RANK}.json").write_text(json.dumps({
        "rank": dist.get_rank(), "world": dist.get_world_size(), "backend": str(dist.get_backend()),
        "ddp_wrapped": isinstance(wrapped, torch.nn.parallel.DistributedDataParallel),
        "layers": sorted({type(m).__name__ for m in model.modules() if "DAttention" in type(m).__name__}),
        "n_attention": len(attention),
        "parse_model_hooked": patching.is_patched(tasks, "parse_model"),
        "policy": host.policy_applied(), "online": ONLINE,
        "square_val": fmap_checks.square_validation(),
        "images": [Path(f).name for f in trainer.last_batch["im_file"]],
        "batch_shape": list(trainer.last_batch["img"].shape),
        "loss_finite": bool(torch.isfinite(trainer.loss).all()),
    }))


def launch(cfg: str, data: str, project: str, out: str) -> None:
    """`YOLO(cfg).train(...)` under our policy, launching `CpuDDPTrainer.WORLD` workers; reports go to `out`."""
    import yolov5_dattn.hosts.ultralytics as host
    from ultralytics import YOLO
    host.use_policy()
    os.environ["DDP_REPORT"] = str(out)
    model = YOLO(cfg)
    model.add_callback("on_train_batch_end", report)
    model.train(trainer=CpuDDPTrainer, data=data, epochs=1, batch=4, imgsz=64, device="cpu", workers=0,
                fraction=0.5, plots=False, val=False, project=project, name="ddp", exist_ok=True)


class StandInTrainer:
    """What the worker script calls `state["trainer"]`: records what it was given (model, callbacks, this process's
    policy) into $DDP_REPORT/standin.json on `train()`, instead of training."""

    def __init__(self, cfg=None, overrides=None, _callbacks=None):
        self.overrides, self.callbacks, self.model = overrides, _callbacks, None

    def train(self) -> None:
        import yolov5_dattn.hosts.ultralytics as host
        from ultralytics.nn import tasks
        from yolov5_dattn import patching
        from yolov5_dattn.nn.dattention import DAttention
        Path(os.environ["DDP_REPORT"], "standin.json").write_text(json.dumps({
            "model": type(self.model).__name__, "args": self.overrides,
            "n_attention": sum(isinstance(m, DAttention) for m in self.model.modules()),
            "callbacks": {event: [repr(c) for c in fns] for event, fns in self.callbacks.items() if fns},
            "policy": host.policy_applied(), "parse_model_hooked": patching.is_patched(tasks, "parse_model"),
        }))
