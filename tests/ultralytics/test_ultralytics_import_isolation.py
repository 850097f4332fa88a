"""Importing the plugin changes nothing a user did not ask for: a stock ultralytics workflow behaves the same with
and without `import yolov5_dattn.hosts.ultralytics`, and our commands' policy is one explicit call.

Each run is a fresh Python: stock `YOLO("yolo11n.yaml")` build -> train 1 epoch -> val -> predict, recording what a
user's process would notice (ultralytics' settings, the environment, SAFE_LOAD, ONLINE, which `check_*` functions
are in place, and the trainer's AMP decision).
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import IMGSZ

WORKFLOW = textwrap.dedent("""
    import json, os, sys
    plugin, policy, data, images, project, out = sys.argv[1:7]
    env_before = dict(os.environ)
    if plugin == "1":
        import yolov5_dattn.hosts.ultralytics as host
        if policy == "1":
            host.use_policy()
    from ultralytics import YOLO
    import ultralytics.utils as utils, ultralytics.utils.checks as checks, ultralytics.nn.tasks as tasks
    import ultralytics.engine.trainer as trainer_module

    seen = {}
    model = YOLO("yolo11n.yaml")
    model.add_callback("on_train_start", lambda trainer: seen.update(amp=bool(trainer.amp)))
    model.train(data=data, epochs=1, imgsz=%d, batch=4, workers=0, device="cpu", project=project, name="train",
                exist_ok=True, plots=False, verbose=False)
    model.val(data=data, imgsz=%d, batch=4, workers=0, device="cpu", project=project, name="val", exist_ok=True,
              plots=False, verbose=False)
    results = model.predict(images, imgsz=%d, device="cpu", verbose=False)
    fn = lambda f: f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', f)}"
    record = {
        "settings": {k: v for k, v in utils.SETTINGS.items()},
        "env_added": sorted(set(os.environ) - set(env_before)),
        "env_changed": sorted(k for k in env_before if os.environ.get(k) != env_before[k]),
        "SAFE_LOAD": tasks.SAFE_LOAD, "ONLINE": utils.ONLINE,
        "checks": {name: fn(getattr(checks, name)) for name in dir(checks) if name.startswith("check_")},
        "trainer_checks": {name: fn(getattr(trainer_module, name)) for name in dir(trainer_module)
                           if name.startswith("check_")},
        "amp": seen["amp"], "predicted": len(results),
    }
    json.dump(record, open(out, "w"))
""" % (IMGSZ, IMGSZ, IMGSZ))


def workflow(plugin: bool, policy: bool, udata, tmp_path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    script = tmp_path / "workflow.py"
    script.write_text(WORKFLOW)
    result = subprocess.run([sys.executable, str(script), "1" if plugin else "0", "1" if policy else "0",
                             str(udata["det_yaml"]), str(udata["val_images"]), str(tmp_path / name), str(out)],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def stock(udata, tmp_path_factory) -> dict:
    return workflow(False, False, udata, tmp_path_factory.mktemp("isolation"), "stock")


@pytest.mark.slow
def test_the_import_changes_nothing_a_stock_workflow_sees(stock, udata, tmp_path):
    imported = workflow(True, False, udata, tmp_path, "imported")
    assert imported == stock
    assert stock["predicted"] == 4


@pytest.mark.slow
def test_the_policy_is_one_explicit_call_and_keeps_amp(stock, udata, tmp_path):
    """`use_policy()` is what changes the process: safe loading, offline, no pip; the AMP decision stays."""
    policed = workflow(True, True, udata, tmp_path, "policy")
    assert policed["SAFE_LOAD"] is True and stock["SAFE_LOAD"] is False
    assert policed["checks"]["check_amp"] == "yolov5_dattn.hosts.ultralytics.amp_check.check_amp_offline.<locals>.check_amp"
    assert stock["checks"]["check_amp"] == "ultralytics.utils.checks.check_amp"
    assert policed["amp"] == stock["amp"] is False  # on CPU ultralytics itself answers False; ours defers to it


def _detector():
    """A small conv 'detector' whose raw output is (1, 6, N): box-like values in pixels and sigmoid scores."""
    class Head(torch.nn.Module):
        stride = torch.tensor([32.0])

        def __init__(self, explode: bool = False):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, stride=32, padding=1)
            self.explode = explode

        def forward(self, x):
            y = self.conv(x).flatten(2)
            if self.explode and torch.is_autocast_enabled(x.device.type):
                y = y * 65504.0 * 4  # what an fp16 overflow does to a layer
            return torch.cat((y[:, :4] * 64, y[:, 4:].sigmoid()), 1)
    torch.manual_seed(0)
    return Head


@pytest.mark.parametrize("explode,expected", [(False, True), (True, False)])
def test_the_local_amp_check_compares_the_model_with_itself(explode, expected):
    """The comparison that replaces ultralytics' download, run here under CPU autocast (bf16): a sane model agrees
    with itself within ultralytics' 0.5 tolerance; one whose mixed-precision output blows up does not."""
    from yolov5_dattn.hosts.ultralytics.amp_check import amp_outputs_agree
    model = _detector()(explode)
    assert amp_outputs_agree(model, "cpu", torch.bfloat16) is expected


def test_the_local_amp_check_defers_to_ultralytics_off_cuda():
    """Off CUDA (and with the reference weights on disk) the decision is ultralytics' own, called as is."""
    from yolov5_dattn.hosts.ultralytics.amp_check import check_amp_offline
    calls = []
    check = check_amp_offline(lambda model: calls.append(model) or "ultralytics' answer")
    model = _detector()()
    assert check(model) == "ultralytics' answer" and calls == [model]
