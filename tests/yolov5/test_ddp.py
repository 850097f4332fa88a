"""Multi-process training: DistributedDataParallel over a model with C3_DAttention, 2 gloo ranks on CPU.

Launched exactly as users launch multi-GPU runs (`python -m torch.distributed.run`), so each rank is a
fresh process that must install the parse_model hook by itself: one node with 2 processes, and 2 nodes
(`--nnodes 2 --node_rank 0/1 --master_addr 127.0.0.1`) with one each.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import torch

REPO = Path(__file__).resolve().parents[2]
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
    "rank": rank, "world": world, "local_rank": int(os.environ["LOCAL_RANK"]), "node": int(os.environ["GROUP_RANK"]),
    "hooked": __import__("yolov5_dattn.patching", fromlist=["_"]).is_patched(yolo, "parse_model"),
    "layer8": type(model.model[8]).__name__,
}))
dist.barrier()
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, launcher_flags: List[List[str]]) -> Path:
    """Start one `torch.distributed.run` per entry of `launcher_flags` (each a "node"), all running WORKER;
    returns the folder the ranks wrote to, once every launcher has exited 0."""
    worker = tmp_path / "ddp_worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    logs = [tmp_path / f"node{i}.log" for i in range(len(launcher_flags))]  # files: a full pipe would stall a node
    launchers = []
    try:
        for flags, log in zip(launcher_flags, logs):
            with open(log, "w") as f:
                launchers.append(subprocess.Popen(
                    [sys.executable, "-m", "torch.distributed.run", *flags, str(worker),
                     str(REPO / "scripts" / "train.py"), str(CFG), str(out)],
                    cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}))
        for p in launchers:
            p.wait(timeout=400)
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(launchers, logs):
        assert p.returncode == 0, log.read_text()[-4000:]
    return out


def test_ddp_two_gloo_ranks_stay_identical(tmp_path):
    out = _launch(tmp_path, [["--standalone", "--nnodes", "1", "--nproc_per_node", "2"]])
    _check_ranks(out, local_ranks=[0, 1], nodes=[0, 0])


def test_ddp_two_nodes_one_process_each(tmp_path):
    """Multi-node flags as a user gives them on two machines (here both on 127.0.0.1): each launcher is a node."""
    port = str(_free_port())
    out = _launch(tmp_path, [["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                              "--master_addr", "127.0.0.1", "--master_port", port] for node in (0, 1)])
    _check_ranks(out, local_ranks=[0, 0], nodes=[0, 1])


def _check_ranks(out: Path, local_ranks: List[int], nodes: List[int]) -> None:
    """Both ranks installed the hook and built C3_DAttention, and DDP kept their weights identical while training."""
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1] and all(i["world"] == 2 for i in infos)
    assert [i["local_rank"] for i in infos] == local_ranks and [i["node"] for i in infos] == nodes
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
