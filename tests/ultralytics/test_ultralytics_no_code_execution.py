"""No file a user was given runs code through the ultralytics host: checkpoints under every name ultralytics picks a
loader by (YOLO-NAS, SAM, plain), `pretrained=`, `resume`, `strip_optimizer`, export, a data YAML's `download:`;
torch's process-wide allowlist is left as it was, also with two threads loading at once; the multi-GPU worker state
is the one full-pickle load without `--trust-checkpoint`.

Every hostile case runs in a fresh process with a marker file its payload would create; each payload has a control
showing that it does run under a plain full-pickle `torch.load` / `exec` / the trusted path.
"""
import datetime
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import IMGSZ, NETGUARD, REPO, yolo
import yolov5_dattn.hosts.ultralytics  # noqa: F401,I001  (the blocks, for the checkpoint these tests save)

BUS = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
CFG = REPO / "yolov5_dattn" / "configs" / "ultralytics" / "yolo11n-c3k2-dattn.yaml"


class _Reduce:
    """Unpickling this calls `fn(*args)`."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payload(path: Path, marker: Path) -> Path:
    """A torch zip checkpoint at `path` whose full unpickling creates `marker` (os.system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Reduce(os.system, f"touch {marker}"), "train_args": {}}, path)
    return path


def python(code: str, cwd: Path, env=None) -> subprocess.CompletedProcess:
    """`code` in a fresh Python under the network guard, with our policy applied first (and the offline
    environment our commands set before ultralytics is imported)."""
    prelude = "import yolov5_dattn.hosts.ultralytics as host\nhost.use_policy()\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(NETGUARD),
                                                      "NETGUARD_LOG": str(cwd / "net.log"), "YOLO_OFFLINE": "1",
                                                      **(env or {})})


def said(result: subprocess.CompletedProcess) -> list:
    """The lines a `python(...)` snippet printed with a leading '> ' (ultralytics prints its own lines too)."""
    return [s[2:] for s in result.stdout.splitlines() if s.startswith("> ")]


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """The one `error:` line of a run that exited 2 without a traceback; it contains each of `words`."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [s for s in result.stderr.splitlines() if s.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def ran_within(marker: Path, seconds: float = 10) -> bool:
    """True once `marker` exists (os.system has returned by the time the load does; this only polls)."""
    deadline = time.time() + seconds
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    return marker.exists()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A real checkpoint of ours (`YOLO(cfg).save`), which loads weights-only."""
    from ultralytics import YOLO
    path = tmp_path_factory.mktemp("good") / "good.pt"
    YOLO(str(CFG)).save(path)
    return path


@pytest.fixture(scope="module")
def full_pickle(good, tmp_path_factory) -> Path:
    """`good` with one harmless value outside the allowlist (a datetime): only a full pickle reads it."""
    ckpt = torch.load(good, weights_only=False)
    ckpt["saved_at"] = datetime.datetime(2024, 1, 1)
    path = tmp_path_factory.mktemp("full") / "full.pt"
    torch.save(ckpt, path)
    return path


# ---- the control: every checkpoint payload below is real -------------------------------------------------------
def test_the_payload_runs_under_a_plain_full_pickle_load(tmp_path):
    marker = tmp_path / "pwned"
    path = payload(tmp_path / "last.pt", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    assert marker.exists()


# ---- the CLI: every loader a model name, pretrained=, resume or export reaches ---------------------------------
@pytest.mark.parametrize("name, mode", [("yolo_nas_s.pt", "predict"), ("sam_b.pt", "predict"),
                                        ("best.pt", "predict"), ("best.pt", "export")])
def test_a_payload_checkpoint_by_any_name_is_refused(name, mode, tmp_path):
    marker = tmp_path / "pwned"
    path = payload(tmp_path / "w" / name, marker)
    extra = [f"source={BUS}"] if mode == "predict" else ["format=onnx"]
    line = refused(yolo(mode, f"model={path}", *extra, f"imgsz={IMGSZ}", "device=cpu", cwd=tmp_path,
                        log=tmp_path / "net.log"), str(path), "--trust-checkpoint")
    assert ("YOLO-NAS" in line) == ("yolo_nas" in name)
    assert not marker.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no export written beside it


@pytest.mark.parametrize("how", ["pretrained", "resume"])
def test_pretrained_and_resume_refuse_a_payload(how, udata, tmp_path):
    marker = tmp_path / "pwned"
    path = payload(tmp_path / "run" / "weights" / "last.pt", marker)
    model = [f"model={CFG}", f"pretrained={path}"] if how == "pretrained" else ["resume", f"model={path}"]
    refused(yolo("train", *model, f"data={udata['det_yaml']}", "epochs=1", f"imgsz={IMGSZ}", "device=cpu",
                 "workers=0", f"project={tmp_path / 'runs'}", cwd=tmp_path, log=tmp_path / "net.log"),
            str(path), "--trust-checkpoint")
    assert not marker.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["last.pt", "weights"]


def test_the_trust_flag_loads_a_full_pickle_checkpoint(full_pickle, tmp_path):
    args = ("predict", f"model={full_pickle}", f"source={BUS}", f"imgsz={IMGSZ}", "device=cpu", "save=False")
    refused(yolo(*args, cwd=tmp_path, log=tmp_path / "net.log"), str(full_pickle), "datetime", "--trust-checkpoint")
    result = yolo(*args, "--trust-checkpoint", cwd=tmp_path, log=tmp_path / "net.log")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bus.jpg" in result.stdout + result.stderr


def test_the_trust_flag_is_what_lets_a_payload_run(tmp_path):
    """Control through the host itself: the same payload refused above does run once the user vouches for it."""
    marker = tmp_path / "pwned"
    path = payload(tmp_path / "best.pt", marker)
    yolo("predict", f"model={path}", f"source={BUS}", "--trust-checkpoint", cwd=tmp_path, log=tmp_path / "net.log")
    assert ran_within(marker)


# ---- the Python API and the loaders no command names -------------------------------------------------------------
def test_strip_optimizer_and_every_torch_load_refuse_a_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = payload(tmp_path / "best.pt", marker)
    before = path.read_bytes()
    out = python(f"""
        from ultralytics.utils import patches, torch_utils
        from ultralytics.models.sam import build
        import ultralytics.nn.tasks as tasks
        from yolov5_dattn.hosts.ultralytics.checkpoints import CheckpointRefused
        assert torch_utils.strip_optimizer({str(path)!r}) == {{}}
        for load in (patches.torch_load, torch_utils.torch_load, tasks.torch_load, build.torch_load):
            try:
                load({str(path)!r})
            except CheckpointRefused as e:
                print(">", "--trust-checkpoint" in str(e))
        with open({str(path)!r}, "rb") as f:  # as SAM's builders pass it
            try:
                build.torch_load(f)
            except CheckpointRefused as e:
                print(">", "--trust-checkpoint" in str(e))
        """, tmp_path)
    assert said(out) == ["True"] * 5, out.stdout + out.stderr[-3000:]
    assert not marker.exists() and path.read_bytes() == before  # strip_optimizer did not rewrite it


def test_library_users_trust_with_a_context_manager(full_pickle, tmp_path):
    out = python(f"""
        from ultralytics import YOLO
        from yolov5_dattn.hosts.ultralytics import trust_checkpoints
        from yolov5_dattn.hosts.ultralytics.checkpoints import CheckpointRefused
        try:
            YOLO({str(full_pickle)!r})
        except CheckpointRefused:
            print("> refused")
        with trust_checkpoints():
            print("> loaded", YOLO({str(full_pickle)!r}).ckpt["saved_at"].year)
        """, tmp_path)
    assert said(out) == ["refused", "loaded 2024"], out.stdout + out.stderr[-3000:]


# ---- data YAMLs: download: never runs ----------------------------------------------------------------------------
def _data_yaml(tmp_path: Path, download: str) -> Path:
    (tmp_path / "d" / "images" / "train").mkdir(parents=True)
    path = tmp_path / "d" / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(tmp_path / "d"), "train": "images/train", "val": "images/val",
                                    "names": {0: "a"}, "download": download}))
    return path


def _downloads(tmp_path: Path, marker: Path) -> dict:
    script = tmp_path / "x.sh"
    script.write_text(f"touch {marker}\n")
    return {"python": f"import os; os.system('touch {marker}')", "bash": "bash x.sh",
            "url": "https://example.com/dataset.zip"}


@pytest.mark.parametrize("kind", ["python", "bash"])
def test_the_download_payloads_run_under_exec_and_as_commands(kind, tmp_path):
    """Control: what ultralytics does with each value (exec for Python, a command for `bash ...`) runs it."""
    marker = tmp_path / "pwned"
    value = _downloads(tmp_path, marker)[kind]
    if kind == "python":
        exec(value, {"yaml": {}})
    else:
        subprocess.run(value.split(), check=True, cwd=tmp_path)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["python", "bash", "url"])
def test_a_data_yaml_download_line_never_runs(kind, good, tmp_path):
    marker = tmp_path / "pwned"
    data = _data_yaml(tmp_path, _downloads(tmp_path, marker)[kind])
    missing = str(tmp_path / "d" / "images" / "val")
    result = yolo("val", f"model={good}", f"data={data}", f"imgsz={IMGSZ}", "device=cpu", cwd=tmp_path,
                  log=tmp_path / "net.log")
    refused(result, missing)
    # inside the host, whoever calls it (the trainer and validator hold it by name; the Python API reaches it there)
    out = python(f"""
        from ultralytics.data import utils
        from ultralytics.engine import trainer, validator
        for check in (utils.check_det_dataset, trainer.check_det_dataset, validator.check_det_dataset):
            try:
                check({str(data)!r}, autodownload=True)
            except FileNotFoundError as e:
                print(">", e)
        """, tmp_path)
    lines = said(out)
    assert len(lines) == 3 and all(missing in s and "download: line is never run" in s for s in lines), \
        out.stdout + out.stderr[-3000:]
    assert not marker.exists() and not (tmp_path / "net.log").exists()


# ---- torch's process-wide allowlist ------------------------------------------------------------------------------
def test_loads_leave_the_process_allowlist_and_other_threads_alone(good, tmp_path):
    """One thread loads our checkpoint again and again (ultralytics' loader, our YOLOv5 loader); another meanwhile
    loads, with plain `torch.load(weights_only=True)`, a file holding a class only we allow (refused every time)
    and one holding a class it allowed itself for the process (accepted every time)."""
    out = python(f"""
        import threading, torch
        from ultralytics.nn.tasks import load_checkpoint
        from yolov5_dattn.nn.layerscale import LayerScale
        from yolov5_dattn.hosts.yolov5 import checkpoints as v5

        class Mine(torch.nn.Module):
            pass

        torch.save(LayerScale(4), "ours.pt")
        torch.save(Mine(), "mine.pt")
        torch.save({{"model": LayerScale(4)}}, "v5.pt")
        torch.serialization.add_safe_globals([Mine])
        before = torch.serialization.get_safe_globals()
        done, counts = threading.Event(), {{"ours accepted": 0, "mine refused": 0, "loops": 0}}

        def loader():
            for _ in range(4):
                load_checkpoint({str(good)!r})
                v5.load("v5.pt")
            done.set()

        def other():
            while not done.is_set():
                try:
                    torch.load("ours.pt", weights_only=True)
                    counts["ours accepted"] += 1
                except Exception:
                    pass
                try:
                    torch.load("mine.pt", weights_only=True)
                except Exception:
                    counts["mine refused"] += 1
                counts["loops"] += 1

        threads = [threading.Thread(target=loader), threading.Thread(target=other)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(">", counts["ours accepted"], counts["mine refused"], counts["loops"] > 4,
              set(map(str, torch.serialization.get_safe_globals())) == set(map(str, before)),
              len(torch.serialization.get_safe_globals()) == len(before))
        """, tmp_path)
    assert said(out) == ["0 0 True True True"], out.stdout + out.stderr[-3000:]


# ---- the multi-GPU worker state ----------------------------------------------------------------------------------
def test_the_ddp_state_loads_only_from_the_private_ddp_folder(tmp_path):
    marker = tmp_path / "pwned"
    evil = payload(tmp_path / "elsewhere" / "_temp_1.pt", marker)
    out = python(f"""
        import os, shutil, stat
        from pathlib import Path
        from types import SimpleNamespace
        from ultralytics.utils import dist, patches
        from yolov5_dattn.hosts.ultralytics.checkpoints import CheckpointRefused, is_ddp_state

        def load(path):
            try:
                state = patches.torch_load(str(path), map_location="cpu")  # what the worker script calls
                return "loaded " + type(state["callbacks"]["on_train_end"][0]).__name__
            except CheckpointRefused:
                return "refused"

        os.umask(0o002)  # a group-writable default must not matter: the folder and the file are made private
        trainer = SimpleNamespace(args=SimpleNamespace(epochs=1), model=None,
                                  callbacks={{"on_pretrain_routine_start": [], "on_train_end": [lambda t: None]}})
        state = Path(dist.generate_ddp_file(trainer)).with_suffix(".pt")
        print(">", oct(stat.S_IMODE(state.parent.stat().st_mode)), oct(stat.S_IMODE(state.stat().st_mode)))
        print(">", is_ddp_state(state), load(state))
        os.chmod(state.parent, 0o777)
        print(">", is_ddp_state(state), load(state))
        os.chmod(state.parent, 0o700)
        os.chmod(state, 0o666)
        print(">", is_ddp_state(state), load(state))
        os.chmod(state, 0o600)
        copy = shutil.copy(state, {str(tmp_path / "elsewhere" / "_temp_2.pt")!r})
        print(">", is_ddp_state(copy), load(copy))
        print(">", is_ddp_state({str(evil)!r}), load({str(evil)!r}))
        """, tmp_path, env={"YOLO_CONFIG_DIR": str(tmp_path / "config")})
    assert said(out) == ["0o700 0o600", "True loaded function", "False refused", "False refused", "False refused",
                     "False refused"], out.stdout + out.stderr[-3000:]
    assert not marker.exists()
