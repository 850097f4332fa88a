"""Transfer from a stock ultralytics checkpoint into a DAttention config: `pretrained=stock.pt` (CLI) and
`YOLO(cfg).load("stock.pt")` copy every non-attention tensor and log a table that says so, the attention
starts fresh, a Detect for another nc is named, another model family gets a warning, and the checkpoint is
read with the restricted loader.

No stock weights exist offline, so the stock checkpoints are made here: one real `last.pt` from a 1-epoch
`yolo11n.yaml` training (64 px, 8 images) and, for the other blocks, stock models saved the way a released
ultralytics `.pt` is (`strip_optimizer`: the model in fp16, no optimizer) with their tensors set to random
values, so that "the tensor landed" cannot hold by accident (a fresh BatchNorm is all ones in both models).
"""
import copy
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from conftest import NETGUARD, REPO

import yolov5_dattn.hosts.ultralytics as host  # noqa: E402  (installs the host before ultralytics is used)
from ultralytics import YOLO, __version__  # noqa: E402
from ultralytics.nn import tasks  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402

from yolov5_dattn.nn.dattention import DAttention  # noqa: E402
from yolov5_dattn.hosts.ultralytics import transfer  # noqa: E402

host.use_policy()  # our commands' policy (safe loading, offline, checks first), as the CLI runs

IMGSZ = 64
UCFG = REPO / "configs" / "ultralytics"
C3K2 = UCFG / "yolo11n-c3k2-dattn.yaml"
COMMON = [f"imgsz={IMGSZ}", "device=cpu", "workers=0", "exist_ok=True", "plots=False"]


@pytest.fixture(scope="module")
def tdata(tmp_path_factory) -> dict:
    """The demo data (3 classes) in a folder of its own: ultralytics writes its label caches there."""
    from yolov5_dattn.demo_data import make_demo_data
    return make_demo_data(tmp_path_factory.mktemp("tdata"), n_train=8, n_val=4, imgsz=IMGSZ, video=False)


@pytest.fixture(scope="module")
def stock_last(tdata, network_attempts, tmp_path_factory) -> Path:
    """A real stock checkpoint: `yolo11n.yaml` trained 1 epoch on `tdata` (nc 3) by ultralytics; its last.pt."""
    project = tmp_path_factory.mktemp("stock")
    YOLO("yolo11n.yaml").train(data=str(tdata["det_yaml"]), epochs=1, imgsz=IMGSZ, batch=4, device="cpu", workers=0,
                               project=str(project), name="stock", plots=False, val=False, verbose=False)
    assert network_attempts == []
    return project / "stock" / "weights" / "last.pt"


class Log(logging.Handler):
    """Collects what ultralytics' LOGGER logs inside a `with` block (`.text`, `.warnings`)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: List[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        LOGGER.addHandler(self)
        return self

    def __exit__(self, *exc):
        LOGGER.removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)

    @property
    def warnings(self) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


def stock_state(path: Path) -> dict:
    """The checkpoint's state_dict as `BaseModel.load` reads it (EMA first, fp32), via ultralytics' loader."""
    model, _ = tasks.load_checkpoint(path)
    return model.state_dict()


def attention_keys(model: torch.nn.Module) -> List[str]:
    """The state_dict names under the model's DAttention modules, found by type (not by name)."""
    prefixes = [n for n, m in model.named_modules() if isinstance(m, DAttention)]
    return [k for k in model.state_dict() if any(k.startswith(p + ".") for p in prefixes)]


def row(text: str, label: str) -> List[str]:
    """The (tensors, values) columns of the table row starting with `label`."""
    line = next(line for line in text.splitlines() if line.strip().startswith(label))
    return line.split()[-2:]


def save_released(model: torch.nn.Module, path: Path, seed: int = 0) -> Path:
    """`model` with random tensor values, saved as a released ultralytics .pt (fp16 model, no optimizer)."""
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)  # positive: running_var stays valid
    torch.save({"date": None, "version": __version__, "epoch": -1, "best_fitness": None, "model": model.half(),
                "ema": None, "updates": None, "optimizer": None, "train_args": {}}, path)
    return path


def test_cli_pretrained_stock_transfers_everything_but_the_attention(stock_last, tdata, tmp_path):
    """`yolov5-dattn yolo train model=<c3k2 dattn> pretrained=stock.pt`: the table, and the epoch runs."""
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
           "NETGUARD_LOG": str(log)}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "yolo.py"), "train", f"model={C3K2}",
                             f"pretrained={stock_last}", f"data={tdata['det_yaml']}", "epochs=1", "batch=4",
                             "val=False", *COMMON, f"project={tmp_path}", "name=dattn"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert not log.exists(), log.read_text()

    # the expected numbers, independently: the same config built for the data's nc, against the checkpoint
    new = tasks.DetectionModel(str(C3K2), nc=3, verbose=False)
    stock, state, attention = stock_state(stock_last), new.state_dict(), attention_keys(new)
    matching = [k for k, v in state.items() if k in stock and stock[k].shape == v.shape]
    assert len(attention) == 30 and not set(attention) & set(stock)
    assert len(matching) == len(state) - len(attention) == 499  # every non-attention tensor has its stock twin

    assert f"Transferred {len(matching)}/{len(state)} items" in out  # ultralytics' own line, unchanged
    assert f"Transfer from {stock_last}:" in out
    assert row(out, "transferred from the checkpoint") == [
        str(len(matching)), f"{sum(state[k].numel() for k in matching):,}"]
    assert row(out, "fresh: DAttention layers") == [
        str(len(attention)), f"{sum(state[k].numel() for k in attention):,}"]
    assert "fresh: shape differs" not in out and "nothing transferred" not in out and "only " not in out
    assert "fresh DAttention: model.8.m.0.m.0.attention, model.8.m.0.m.1.attention" in out
    assert f"non-attention part: fully transferred ({len(matching)}/{len(matching)} tensors)" in out
    assert "layers 0-7, 9-23: all transferred" in out
    assert "layer 8 (C3k2_DAttention): 54 transferred; 30 fresh (DAttention)" in out
    # and training started from it, after the table: the epoch ran and wrote its weights
    assert out.index("Transfer from") < out.index("Starting training for 1 epochs") < out.index("1 epochs completed")
    assert (tmp_path / "dattn" / "weights" / "last.pt").is_file()


def test_python_load_for_another_nc_names_the_detect_tensors_and_copies_the_rest(stock_last):
    """`YOLO(cfg).load(stock)` with the config's nc 80 against the checkpoint's nc 3: only the class outputs of
    Detect start fresh; every other non-attention tensor holds the checkpoint's exact values."""
    model = YOLO(str(C3K2))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    with Log() as log:
        model.load(stock_last)
    report, state, stock = transfer.last_report, model.model.state_dict(), stock_state(stock_last)
    attention = attention_keys(model.model)
    nc_dependent = sorted(f"model.23.cv3.{i}.2.{p}" for i in range(3) for p in ("weight", "bias"))

    assert sorted(report.keys["shape"]) == nc_dependent
    assert sorted(report.keys["attention"]) == sorted(attention)
    assert report.keys["missing"] == [] and report.keys["excluded"] == []
    transferred = [k for k in state if k not in attention and k not in nc_dependent]
    assert sorted(report.keys["transferred"]) == sorted(transferred) and len(transferred) == 493
    for key in transferred:
        assert torch.equal(state[key], stock[key]), key
    for key in attention:  # fresh means untouched by the load
        assert torch.equal(state[key], before[key]), key

    text = log.text
    assert row(text, "transferred from the checkpoint")[0] == "493"
    assert row(text, "fresh: DAttention layers")[0] == "30"
    assert row(text, "fresh: shape differs") == ["6", f"{sum(state[k].numel() for k in nc_dependent):,}"]
    assert "non-attention part: 493/499 tensors transferred, 6 start fresh (6 shape differs)" in text
    assert ("layer 23 (Detect): 115 transferred; 6 fresh (shape differs: cv3.0.2.weight 3x64x1x1 -> 80x64x1x1, "
            "cv3.0.2.bias 3 -> 80, ...)") in text
    assert log.warnings == []

    # train() loads the model loaded here into a fresh one (trainer.get_model): one line, not a second table
    with Log() as log:
        tasks.DetectionModel(str(C3K2), verbose=False).load(model.model)
    assert log.text.splitlines()[-1] == f"Transfer: all 529 tensors from the model loaded before (from {stock_last}); " \
                                        "its table is above"


@pytest.mark.parametrize("cfg,stock_yaml,layer,block,n_attention,unused", [
    ("yolov8n-c2f-dattn.yaml", "yolov8n.yaml", 8, "C2f_DAttention", 15, 0),
    ("yolo11n-c2psa-dattn.yaml", "yolo11n.yaml", 10, "C2PSA_DAttention", 15, 18),  # C2PSA's own Attention: unused
    ("yolo11n-c3k2-dattn.yaml", "yolo11n.yaml", 8, "C3k2_DAttention", 30, 0),
])
def test_every_non_attention_tensor_of_the_stock_model_lands(cfg, stock_yaml, layer, block, n_attention, unused,
                                                            tmp_path):
    stock_model = tasks.DetectionModel(stock_yaml, verbose=False)
    path = save_released(stock_model, tmp_path / "stock.pt")
    model = YOLO(str(UCFG / cfg))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    with Log() as log:
        model.load(path)
    state, stock, report = model.model.state_dict(), stock_state(path), transfer.last_report
    attention = attention_keys(model.model)

    assert len(attention) == n_attention and sorted(report.keys["attention"]) == sorted(attention)
    others = [k for k in state if k not in attention]
    assert sorted(report.keys["transferred"]) == sorted(others)  # nothing but the attention starts fresh
    for key in others:
        assert stock[key].shape == state[key].shape and torch.equal(state[key], stock[key]), key
    for key in attention:
        assert torch.equal(state[key], before[key]), key
    assert report.unused == unused == len(set(stock) - set(state))

    text = log.text
    assert row(text, "transferred from the checkpoint") == [str(len(others)),
                                                            f"{sum(state[k].numel() for k in others):,}"]
    assert row(text, "fresh: DAttention layers")[0] == str(n_attention)
    assert f"non-attention part: fully transferred ({len(others)}/{len(others)} tensors)" in text
    assert f"layer {layer} ({block}): " in text and f"; {n_attention} fresh (DAttention)" in text
    assert (f"{unused} checkpoint tensors have no place in the new model (unused)" in text) == bool(unused)
    assert log.warnings == []


def test_another_family_warns_and_a_stock_load_is_left_as_ultralytics_logs_it(tmp_path):
    # RT-DETR into YOLO11: only BatchNorm step counters share a name and shape
    path = save_released(tasks.RTDETRDetectionModel("rtdetr-l.yaml", verbose=False), tmp_path / "rtdetr.pt")
    model = YOLO(str(C3K2))
    with Log() as log:
        model.load(path)  # no exception
    report = transfer.last_report
    assert report.keys["transferred"] and all(k.endswith("num_batches_tracked") for k in report.keys["transferred"])
    assert len(log.warnings) == 1
    assert log.warnings[0].endswith(f"{path}: nothing transferred: no weight of the checkpoint has a name and shape "
                                    "of this model (another model family, task or scale?); the model trains from scratch")

    # a stock model loading stock weights: ultralytics' own line only (nothing of ours involved)
    stock = save_released(tasks.DetectionModel("yolo11n.yaml", verbose=False), tmp_path / "stock.pt")
    with Log() as log:
        YOLO("yolo11n.yaml").load(stock)
    assert "Transferred 499/499 items" in log.text and "Transfer from" not in log.text


def test_the_stock_checkpoint_is_read_by_the_restricted_loader(tdata, tmp_path, capsys):
    path = save_released(tasks.DetectionModel("yolo11n.yaml", verbose=False), tmp_path / "stock.pt")
    calls = []
    real = tasks.torch_load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    from yolov5_dattn import patching
    with patching.temporarily(tasks, "torch_load", spy, why="test: record how checkpoints are unpickled"):
        YOLO(str(C3K2)).load(path)
    assert calls == [True]

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"model": Evil()}, tmp_path / "evil.pt")  # runs a command if unpickled in full
    from yolov5_dattn.hosts.ultralytics.checkpoints import CheckpointRefused
    with pytest.raises(CheckpointRefused, match="evil.pt was not loaded: .*pass --trust-checkpoint only if"):
        YOLO(str(C3K2)).load(tmp_path / "evil.pt")
    # and as `pretrained=` of the CLI: one error line, exit status 2
    from yolov5_dattn.cli.yolo import main
    capsys.readouterr()
    status = main(["train", f"model={C3K2}", f"pretrained={tmp_path / 'evil.pt'}", f"data={tdata['det_yaml']}",
                   "epochs=1", *COMMON, f"project={tmp_path}", "name=evil"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "evil.pt was not loaded" in err[0], err
    assert err[0].startswith("error: yolov5-dattn yolo: ") and str(tmp_path / "evil.pt") in err[0]
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "evil").exists()  # refused before the trainer made its run folder
    # a missing file: named, and no folder either
    status = main(["train", f"model={C3K2}", f"pretrained={tmp_path / 'nothing.pt'}", f"data={tdata['det_yaml']}",
                   "epochs=1", *COMMON, f"project={tmp_path}", "name=missing"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "nothing.pt: no such file" in err[0]
    assert not (tmp_path / "missing").exists()
