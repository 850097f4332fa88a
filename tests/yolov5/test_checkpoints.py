"""Safe checkpoint loading: allowlisted weights_only loads, and one-line refusals of everything else."""
import pathlib

import pytest
import torch

from conftest import DET_CFG, REPO, run_script, run_task
from yolov5_dattn.hosts.yolov5 import checkpoints
from yolov5_dattn.errors import UserError


class Payload:
    """Unpickling this calls Path.touch(marker): proof, if the marker appears, that pickle code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def malicious(tmp_path) -> tuple:
    """A .pt whose unpickling would create `marker`; returns (file, marker)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "malicious.pt"
    torch.save({"model": Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_trained_checkpoint_needs_only_allowlisted_globals(trained_det):
    best = trained_det / "weights" / "best.pt"
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in checkpoints.allowlist()}
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(best)))
    assert needed and needed <= allowed
    model = checkpoints.check_model_checkpoint(best, trust=False)
    assert any(type(m).__name__ == "DAttention" for m in model.modules())


def test_segmentation_checkpoint_has_no_getattr(tmp_path):
    """Fact: a stock 7.0.14 Segment pickles `builtins.getattr`; ours does not, and still runs."""
    from yolov5.models.yolo import SegmentationModel
    model = SegmentationModel(str(REPO / "configs" / "segment" / "yolov5n-seg_c3_dattn.yaml"), nc=3).eval()
    path = tmp_path / "seg.pt"
    torch.save({"model": model}, path)
    assert "builtins.getattr" not in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    loaded = checkpoints.load(path, trust=False)["model"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pred, proto = loaded(x)[:2]
    assert pred.shape[-1] == 5 + 3 + 32 and proto.shape[1] == 32


def test_malicious_pickle_is_refused_and_never_runs(malicious):
    path, marker = malicious
    with pytest.raises(UserError, match="--trust-checkpoint") as e:
        checkpoints.load(path, trust=False)
    assert "builtins.getattr" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    # the explicit trust flag really switches to full pickle (which is what makes it dangerous)
    checkpoints.load(path, trust=True)
    assert marker.exists()


def test_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(UserError, match="not found"):
        checkpoints.load(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="corrupt"):
        checkpoints.load(corrupt)
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(UserError, match="corrupt"):
        checkpoints.load(truncated)
    foreign = tmp_path / "state_dict.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(UserError, match="not a YOLOv5 checkpoint"):
        checkpoints.check_model_checkpoint(foreign)


def test_cli_refuses_malicious_checkpoint_in_one_line(malicious, tmp_path):
    """Through the real script: one `error:` line, exit 2, no traceback, payload not run, nothing written."""
    path, marker = malicious
    log = tmp_path / "net.log"
    result = run_script("detect.py", "--weights", path, "--source", path, cwd=tmp_path, log=log)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip().splitlines()
    assert err[-1].startswith(f"error: checkpoint {path} needs") and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "runs").exists()
    assert not log.exists()  # no socket was even attempted


def test_missing_weights_is_one_line_without_network(tmp_path, capsys, network_attempts, demo):
    assert run_task("val", "--weights", tmp_path / "nope.pt", "--data", demo["det_yaml"],
                    "--project", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --weights {tmp_path / 'nope.pt'} not found: pass an existing .pt, .onnx or "
                   f".torchscript file (this plugin never downloads weights)"]
    assert not (tmp_path / "runs").exists() and network_attempts == []


def test_trust_flag_lets_a_trusted_checkpoint_through(tmp_path, capsys, monkeypatch):
    """A checkpoint naming a class outside the allowlist loads only with --trust-checkpoint."""
    from yolov5.models.yolo import DetectionModel
    monkeypatch.delenv(checkpoints.TRUST_ENV, raising=False)
    model = DetectionModel(str(DET_CFG), nc=3)
    model.note = pathlib.PurePath  # a class reference: pickled as a GLOBAL, which is not allowlisted
    path = tmp_path / "odd.pt"
    torch.save({"model": model}, path)
    with pytest.raises(UserError, match="PurePath"):
        checkpoints.check_model_checkpoint(path)
    monkeypatch.setenv(checkpoints.TRUST_ENV, "1")
    assert checkpoints.check_model_checkpoint(path) is not None
