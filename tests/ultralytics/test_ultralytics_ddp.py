"""ultralytics' multi-GPU training (`device=0,1`) with our blocks, run on the CPU: gloo, 2 workers, offline.

The launch is ultralytics' own (`BaseTrainer.train`'s DDP branch, `generate_ddp_file` with cloudpickle,
`torch.distributed.run`, the generated worker script, `ddp_cleanup`); only the CUDA device and NCCL are replaced
(tests/ultralytics_ddp_cpu.py says where). The model is built from a YAML, the case where the pickled state does
not name our blocks and the `ddp` seam (yolov5_dattn/hosts/ultralytics/ddp.py) has to.
"""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import torch

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "ultralytics" / "yolo11n-c3k2-dattn.yaml"
NETGUARD = TESTS / "netguard"


def _env(tmp_path: Path, **extra) -> dict:
    """A subprocess environment: tests/ importable (the trainer pickles by reference), network blocked and logged,
    ultralytics' config folder (where its DDP files go) in tmp_path, offline as our commands set it."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
            "NETGUARD_LOG": str(tmp_path / "net.log"), "YOLO_CONFIG_DIR": str(tmp_path / "config"),
            "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def test_two_gloo_workers_train_our_blocks_from_a_yaml(udata, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    code = ("import sys, ultralytics_ddp_cpu as d; d.launch(*sys.argv[1:])")
    run = subprocess.run([sys.executable, "-c", code, str(CFG), str(udata["det_yaml"]), str(tmp_path / "runs"),
                          str(out)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert not (tmp_path / "net.log").exists(), (tmp_path / "net.log").read_text()

    # the launching process: our feature-map checks ran before ultralytics' DDP command
    assert log.index("yolov5-dattn: DAttention model.8.m.0.m.0.attention: stride 32, dwc_pe") < log.index(
        "-m torch.distributed.run --nproc_per_node 2")
    # the state was written under the user's config folder and removed after the run (ddp_cleanup)
    ddp_folder = tmp_path / "config" / "Ultralytics" / "DDP"
    assert ddp_folder.is_dir() and list(ddp_folder.iterdir()) == []

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, rep in enumerate(reports):
        assert (rep["rank"], rep["world"], rep["backend"], rep["ddp_wrapped"]) == (rank, 2, "gloo", True)
        assert {"C3k2_DAttention", "C3k_DAttention", "Bottleneck_DAttention", "DAttention"} <= set(rep["layers"])
        assert rep["n_attention"] == 2 and rep["parse_model_hooked"]
        assert rep["policy"] and rep["online"] is False  # the launching process's policy, in the worker
        assert rep["square_val"] is False  # dwc_pe: validation stays ultralytics' rectangular one
        assert rep["batch_shape"] == [2, 3, 64, 64] and rep["loss_finite"]
    assert not set(reports[0]["images"]) & set(reports[1]["images"])  # each worker its own shard

    # different images, one gradient: DDP all-reduced the attention's gradient over gloo, and the step kept the
    # two copies of the weights equal
    g0, g1 = (torch.load(out / f"rank{r}.pt") for r in range(2))
    assert torch.count_nonzero(g0["grad"]) > 0
    assert torch.equal(g0["grad"], g1["grad"]) and torch.equal(g0["weight"], g1["weight"])
    # rank 0 saved the run, and the launching process loaded its checkpoint back (Model.train's end)
    assert (tmp_path / "runs" / "ddp" / "weights" / "last.pt").is_file()


def test_the_worker_script_loads_its_state_under_our_policy(tmp_path):
    """The strict case: our policy (weights-only loading) is active in the worker before it reads the state.
    The state is trusted where ultralytics writes it, and the same bytes anywhere else are refused."""
    out = tmp_path / "report"
    out.mkdir()
    generate = f"""
import sys
from types import SimpleNamespace
import yolov5_dattn.hosts.ultralytics as host
host.use_policy()
from ultralytics import YOLO
from ultralytics.utils import dist
import ultralytics_ddp_cpu as d
trainer = d.StandInTrainer()
trainer.args = SimpleNamespace(model="yolo11n-c3k2-dattn.yaml", imgsz=64)
trainer.model = YOLO({str(CFG)!r}).model  # a model object: the state pickles our classes themselves
trainer.callbacks = {{"on_train_start": []}}
print(dist.generate_ddp_file(trainer))
assert trainer.callbacks == {{"on_train_start": []}}, trainer.callbacks  # the launching trainer is left as it was
"""
    made = subprocess.run([sys.executable, "-c", generate], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    script = Path(made.stdout.strip().splitlines()[-1])
    state = script.with_suffix(".pt")
    assert script.parent == tmp_path / "config" / "Ultralytics" / "DDP" and state.is_file()

    worker = ("import runpy, sys, yolov5_dattn.hosts.ultralytics as host; host.use_policy(); "
              "runpy.run_path(sys.argv[1], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", worker, str(script)], cwd=tmp_path,
                         env=_env(tmp_path, DDP_REPORT=str(out)), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = json.loads((out / "standin.json").read_text())
    assert rep["model"] == "DetectionModel" and rep["n_attention"] == 2
    assert rep["args"] == {"model": "yolo11n-c3k2-dattn.yaml", "imgsz": 64}
    assert rep["callbacks"] == {"on_pretrain_routine_start": ["WorkerSetup(policy=True, square_val=False)"]}
    assert rep["policy"] and rep["parse_model_hooked"]

    # control: the same bytes outside ultralytics' DDP folder, loaded the same way under the policy, are refused
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / state.name).write_bytes(state.read_bytes())
    probe = ("import sys, yolov5_dattn.hosts.ultralytics as host; host.use_policy()\n"
             "from ultralytics.utils.patches import torch_load\n"
             "from yolov5_dattn.errors import UserError\n"
             "try:\n    torch_load(sys.argv[1], map_location='cpu')\n"
             "except UserError as e:\n    print('refused:', e)\nelse:\n    print('loaded')\n")
    refused = subprocess.run([sys.executable, "-c", probe, str(elsewhere / state.name)], cwd=tmp_path,
                             env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 0, refused.stderr[-3000:]
    assert refused.stdout.startswith("refused:") and "--trust-checkpoint" in refused.stdout, refused.stdout
    assert not (tmp_path / "net.log").exists(), (tmp_path / "net.log").read_text()


def test_worker_setup_unpickled_in_a_fresh_process_installs_what_the_launcher_had(tmp_path):
    from yolov5_dattn.hosts.ultralytics.ddp import WorkerSetup
    check = ("import pickle, sys\n"
             "assert not any(m.startswith('yolov5_dattn') for m in sys.modules)\n"
             "entry = pickle.loads(open(sys.argv[1], 'rb').read())\n"
             "import yolov5_dattn.hosts.ultralytics as host\n"
             "from yolov5_dattn import patching\n"
             "from yolov5_dattn.hosts.ultralytics import fmap_checks\n"
             "from ultralytics.nn import tasks\n"
             "print(repr(entry), host.policy_applied(), fmap_checks.square_validation(),"
             " patching.is_patched(tasks, 'parse_model'))\n")
    seen = []
    for policy, square in ((True, True), (False, False)):
        blob = tmp_path / f"entry-{policy}.pkl"
        blob.write_bytes(cloudpickle.dumps(WorkerSetup(policy, square)))
        run = subprocess.run([sys.executable, "-c", check, str(blob)], cwd=tmp_path, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        seen.append(run.stdout.strip().splitlines()[-1])
    assert seen == ["WorkerSetup(policy=True, square_val=True) True True True",
                    "WorkerSetup(policy=False, square_val=False) False False True"]
    assert pickle.loads(pickle.dumps(WorkerSetup(True, False))).policy  # plain pickle too (torch.save's default)
