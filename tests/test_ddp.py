"""Multi-process training: DistributedDataParallel over a model with C3_DAttention, 2 gloo ranks on CPU.

Launched exactly as users launch multi-GPU runs (`python -m torch.distributed.run`), so each rank is a
fresh process that must install the parse_model hook by itself.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "yolov5n_c3_dattn.yaml"

WORKER = r'''
"""One rank: build the model the way the wrapper's train does, wrap it in DDP, take a few steps."""
import json, os, runpy, sys
from pathlib import Path

import torch
import torch.distributed as dist

train_script, cfg, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
# the wrapper's module code (its imports) as each rank runs it under torch.distributed.run, minus its
# main(): YOLOv5's own DDP training asserts CUDA devices, so the step loop below stands in for it
runpy.run_path(train_script, run_name="ddp_rank")
import yolov5.models.yolo as yolo
from yolov5.train import Model  # the name YOLOv5's train.py builds its model with

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(100 + rank)  # different init and data per rank: only DDP can keep them equal

model = Model(cfg, ch=3, nc=2)
if rank == 0:
    torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, out / "initial.pt")
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
for _ in range(3):
    x = torch.rand(2, 3, 128, 128)
    loss = sum(p.float().pow(2).mean() for p in ddp(x))
    opt.zero_grad()
    loss.backward()
    opt.step()

torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, out / f"rank{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "world": world, "local_rank": int(os.environ["LOCAL_RANK"]),
    "hooked": __import__("yolov5_dattn.patching", fromlist=["_"]).is_patched(yolo, "parse_model"),
    "layer8": type(model.model[8]).__name__,
}))
dist.barrier()
dist.destroy_process_group()
'''


def test_ddp_two_gloo_ranks_stay_identical(tmp_path):
    worker = tmp_path / "ddp_worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", "2", str(worker), str(REPO / "scripts" / "train.py"), str(CFG), str(out)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1] and all(i["world"] == 2 for i in infos)
    assert all(i["hooked"] for i in infos)  # every rank installed the hook, through the wrapper's imports
    assert all(i["layer8"] == "C3_DAttention" for i in infos)

    initial = torch.load(out / "initial.pt")
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() == initial.keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    # the steps did train, the attention included (so its gradients were all-reduced too). Weights
    # only: some biases provably get no gradient (a key bias cancels in the softmax; the output
    # biases are per-channel constants that the following Conv's BatchNorm removes).
    attention = [n for n in initial if ".attention." in n and n.endswith("weight")]
    assert len(attention) >= 8
    moved = [n for n in attention if not torch.equal(initial[n], ranks[0][n])]
    assert len(moved) == len(attention), sorted(set(attention) - set(moved))
