"""Nothing in a checkpoint or a model YAML is ever executed.

Two kinds of payload ran code before: a .pt whose pickle *calls* an allowlisted model class
(`DetectionModel(cfg)`, REDUCE), and a model dict (a checkpoint's `model.yaml`, or a --cfg file) holding
Python expressions that YOLOv5's parse_model passed to `eval` (the activation, a module name, an argument).
Each payload here writes a marker file if it runs. The controls show it does run under YOLOv5's `eval`;
the rest show it never runs through any script, and that each script stops with one `error:` line, exit 2.
"""
import copy
import re
import runpy
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import DET_CFG, IMGSZ, REPO, SEG_CFG, TRAIN_FLAGS, run_script, run_task
import yolov5_dattn  # noqa: F401,I001  first: applies the compat layer and the parse_model hook
import yolov5.models.yolo as yolo
from yolov5_dattn import C3_DAttention, patching
from yolov5_dattn.hosts.yolov5 import checkpoints, registry, safe_yaml
from yolov5_dattn.hosts.yolov5.entrypoint import parse
from yolov5_dattn.errors import UserError

YOLOV5_MODELS = Path(yolo.__file__).resolve().parent
YAML_KINDS = ("activation", "module", "argument")
# what each refusal names: the key or the layer
NAMED = {"activation": "activation", "module": "layer 0: module", "argument": "layer 0 (Conv) argument 0",
         "call": "calls yolov5.models.yolo."}


def model_yamls():
    """Every YOLOv5 model YAML we ship and every one of the installed YOLOv5 (models/, hub/, segment/); the
    ultralytics host's YAMLs (configs/ultralytics/) are tested in test_ultralytics.py."""
    ours = [f for f in sorted(DET_CFG.parent.rglob("*.yaml")) if "ultralytics" not in f.parts]
    files = ours + sorted(YOLOV5_MODELS.rglob("*.yaml"))
    return [f for f in files if "backbone" in (yaml.safe_load(f.read_text()) or {})]


def touch(marker: Path, result: str) -> str:
    """A Python expression that creates `marker` and then evaluates to `result`."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch() or {result}"


def poisoned(d: dict, kind: str, marker: Path) -> dict:
    """Model dict `d` with one string replaced by an expression that builds the same model if evaluated."""
    d = copy.deepcopy(d)
    if kind == "activation":
        d["activation"] = touch(marker, "nn.SiLU()")
    elif kind == "module":
        d["backbone"][0][2] = touch(marker, "Conv")
    else:
        d["backbone"][0][3][0] = touch(marker, "64")
    return d


class Calls:
    """Pickles as REDUCE(cls, args): unpickling it *calls* `cls(*args)` (e.g. DetectionModel(cfg))."""

    def __init__(self, cls, *args):
        self.cls, self.args = cls, args

    def __reduce__(self):
        return self.cls, self.args


@pytest.fixture(scope="module")
def unsafe_parse_model():
    """parse_model as the hook built it before: registry sets, but YOLOv5's own `eval` calls."""
    return registry._patched_parse_model(yolo, safe=False)


def _build(parse, cfg: Path, device: str):
    """(layers, savelist, default activation) of `cfg` built by `parse`; Conv.default_act is restored
    (YOLOv5 sets it globally for a YAML with `activation`)."""
    act = yolo.Conv.default_act
    try:
        with torch.device(device):
            torch.manual_seed(0)
            layers, save = parse(yaml.safe_load(cfg.read_text()), ch=[3])
        return layers, save, repr(yolo.Conv.default_act)
    finally:
        yolo.Conv.default_act = act


@pytest.mark.parametrize("cfg", model_yamls(), ids=lambda p: p.name)
def test_every_model_yaml_builds_the_same_without_eval(cfg, unsafe_parse_model):
    """Same layers, arguments, save list, activation and parameter shapes as YOLOv5's eval-based build
    (on the meta device: no memory, so the x6 models take no time)."""
    ours, theirs = _build(yolo.parse_model, cfg, "meta"), _build(unsafe_parse_model, cfg, "meta")
    assert [(m.i, m.f, m.type, m.np) for m in ours[0]] == [(m.i, m.f, m.type, m.np) for m in theirs[0]]
    assert ours[1:] == theirs[1:]
    assert {k: v.shape for k, v in ours[0].state_dict().items()} == \
        {k: v.shape for k, v in theirs[0].state_dict().items()}
    assert sum(p.numel() for p in ours[0].parameters()) == sum(p.numel() for p in theirs[0].parameters()) > 0


@pytest.mark.parametrize("cfg", [DET_CFG, SEG_CFG, YOLOV5_MODELS / "yolov5n.yaml", YOLOV5_MODELS / "yolov5s.yaml",
                                 YOLOV5_MODELS / "segment" / "yolov5n-seg.yaml"], ids=lambda p: p.name)
def test_small_models_are_identical_down_to_the_weights(cfg, unsafe_parse_model):
    """Seeded CPU builds: every parameter and buffer equal, so construction order is unchanged too."""
    ours, theirs = _build(yolo.parse_model, cfg, "cpu")[0], _build(unsafe_parse_model, cfg, "cpu")[0]
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("cfg", [DET_CFG, SEG_CFG], ids=lambda p: p.name)
def test_hooked_parse_model_never_calls_eval(cfg, unsafe_parse_model, monkeypatch):
    """Building a model evaluates no text at all: an `eval` that records its calls, put where parse_model looks the
    name up, sees none; the control (YOLOv5's own eval calls) shows it would."""
    import sys
    calls = []

    def recording_eval(text, *args):
        calls.append(text)
        caller = sys._getframe(1)
        return eval(text, *(args or (caller.f_globals, caller.f_locals)))

    monkeypatch.setitem(vars(yolo), "eval", recording_eval)
    _build(yolo.parse_model, cfg, "meta")
    assert calls == []
    _build(unsafe_parse_model, cfg, "meta")
    assert "Conv" in calls and "nc" in calls


# ---- the grammar -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,cls,slope", [("nn.SiLU()", nn.SiLU, None), (" nn.LeakyReLU(0.1) ", nn.LeakyReLU, 0.1),
                                            ("nn.LeakyReLU(negative_slope=0.2)", nn.LeakyReLU, 0.2),
                                            ("nn.Hardswish()", nn.Hardswish, None)])
def test_activation_grammar_accepts_nn_calls_with_literals(text, cls, slope):
    act = safe_yaml.build_activation(text)
    assert type(act) is cls
    assert slope is None or act.negative_slope == slope


@pytest.mark.parametrize("text", ["__import__('os').system('true') or nn.SiLU()", "nn.SiLU", "torch.nn.SiLU()",
                                  "SiLU()", "nn.LeakyReLU(x)", "nn.LeakyReLU(*[0.1])", "nn.SiLU(**{})",
                                  "nn._private()", "nn.NoSuchThing()", "nn.functional.relu()", "lambda: nn.SiLU()",
                                  "nn.LeakyReLU(0.1, 2, 3, 4)", 3, ["nn.SiLU()"]])
def test_activation_grammar_refuses_everything_else(text):
    with pytest.raises(safe_yaml.UnsafeModelYAML, match=r"^model YAML activation ") as e:
        safe_yaml.build_activation(text)
    assert "\n" not in str(e.value)


def test_arguments_are_literals_nc_anchors_or_free_words():
    values, in_scope = {"nc": 3, "anchors": [[1, 2]]}, safe_yaml.scope_checker(yolo, ["ch", "gw"])
    resolved = [safe_yaml.resolve_arg(a, values, in_scope, "layer 1 (X) argument 0")
                for a in ["nc", "anchors", "None", "True", "'text'", "[1, 2.5, -3]", "nearest", "bilinear", 7, [1]]]
    assert resolved == [3, [[1, 2]], None, True, "text", [1, 2.5, -3], "nearest", "bilinear", 7, [1]]
    for bad, why in [("os", "names a Python object"), ("ch", "names a Python object"), ("print", "names a Python"),
                     ("Conv", "names a Python object"), ("nc*2", "is an expression"), ("[nc]", "is an expression"),
                     ("__import__('os')", "is an expression"), ("9**9**9", "is an expression")]:
        with pytest.raises(safe_yaml.UnsafeModelYAML, match=f"^model YAML layer 1 \\(X\\) argument 0 .*{why}"):
            safe_yaml.resolve_arg(bad, values, in_scope, "layer 1 (X) argument 0")


def test_module_names_come_from_the_namespace_only():
    ns = safe_yaml.module_namespace(yolo)
    assert safe_yaml.resolve_module("Conv", ns, "layer 0") is yolo.Conv
    assert safe_yaml.resolve_module("nn.Upsample", ns, "layer 0") is nn.Upsample
    assert safe_yaml.resolve_module("C3_DAttention", ns, "layer 0") is C3_DAttention
    with pytest.raises(NameError):  # preflight turns it into "unknown module ..., did you mean"
        safe_yaml.resolve_module("os", ns, "layer 0")
    with pytest.raises(AttributeError):
        safe_yaml.resolve_module("nn.functional", ns, "layer 0")
    for bad in ["__import__('os').system", "nn.modules.conv.Conv2d", "torch.nn.Conv2d", "Conv()", 5]:
        with pytest.raises(safe_yaml.UnsafeModelYAML, match="^model YAML layer 0: module .* is not a module name"):
            safe_yaml.resolve_module(bad, ns, "layer 0")


# ---- the controls: the payloads are live under YOLOv5's eval -------------------------------------------
@pytest.mark.parametrize("kind", YAML_KINDS)
def test_yaml_payloads_run_under_yolov5s_eval_but_not_ours(kind, tmp_path, unsafe_parse_model):
    marker = tmp_path / "ran"
    d = poisoned(yaml.safe_load(DET_CFG.read_text()), kind, marker)
    act = yolo.Conv.default_act
    try:
        unsafe_parse_model(copy.deepcopy(d), ch=[3])
    finally:
        yolo.Conv.default_act = act
    assert marker.exists()  # the payload is real
    marker.unlink()
    with pytest.raises(safe_yaml.UnsafeModelYAML, match=f"^model YAML {re.escape(NAMED[kind])}"):
        yolo.Model(d)
    assert not marker.exists()


def test_call_payload_runs_under_full_pickle_but_the_loader_refuses_the_call(tmp_path, monkeypatch,
                                                                             unsafe_parse_model):
    marker = tmp_path / "ran"
    path = tmp_path / "calls.pt"
    torch.save({"model": Calls(yolo.DetectionModel, poisoned(yaml.safe_load(DET_CFG.read_text()), "activation",
                                                             marker))}, path)
    assert "yolov5.models.yolo.DetectionModel" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    monkeypatch.setattr(yolo, "parse_model", unsafe_parse_model)  # as before the hook lost eval
    monkeypatch.setattr(yolo.Conv, "default_act", yolo.Conv.default_act)
    with pytest.raises(checkpoints.UserError, match=r"calls yolov5\.models\.yolo\.DetectionModel\(\.\.\.\) while "
                                                    r"loading .* --trust-checkpoint") as e:
        checkpoints.load(path, trust=False)  # the loader alone stops it: the class is never called
    assert "\n" not in str(e.value) and not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()  # what a call does: build the model from the file's cfg


@pytest.mark.parametrize("cls,args", [(yolo.DetectionModel, (str(DET_CFG),)), (nn.Conv2d, (3, 3, 1)),
                                      (C3_DAttention, (64, 64))], ids=["DetectionModel", "Conv2d", "C3_DAttention"])
def test_no_allowlisted_module_class_can_be_called(cls, args, tmp_path):
    path = tmp_path / "calls.pt"
    torch.save({"model": Calls(cls, *args)}, path)
    with pytest.raises(checkpoints.UserError, match=f"calls {cls.__module__}.{cls.__qualname__}"):
        checkpoints.load(path, trust=False)


def test_classes_other_code_allowlisted_for_the_process_cannot_be_called(tmp_path):
    """ultralytics' restricted loader adds real classes to torch's process-wide allowlist for good; our loader
    still refuses a call of one, and leaves that list as it found it."""
    path = tmp_path / "calls.pt"
    torch.save({"model": Calls(nn.Conv2d, 3, 3, 1)}, path)
    before = list(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([nn.Conv2d])
    try:
        with pytest.raises(checkpoints.UserError, match="calls torch.nn.modules.conv.Conv2d"):
            checkpoints.load(path, trust=False)
        assert nn.Conv2d in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_saved_models_are_restored_as_the_real_classes(tmp_path):
    """NEWOBJ + BUILD (how torch.save pickles modules) still works: same outputs, real classes, no stand-in."""
    for cls, cfg in [(yolo.DetectionModel, DET_CFG), (yolo.SegmentationModel, SEG_CFG)]:
        model = cls(str(cfg), nc=3).eval()
        path = tmp_path / f"{cls.__name__}.pt"
        torch.save({"model": model, "opt": {"save_dir": Path("runs/x")}}, path)
        ckpt = checkpoints.load(path, trust=False)
        loaded = ckpt["model"]
        assert type(loaded) is cls and ckpt["opt"]["save_dir"] == Path("runs/x")
        assert not any(isinstance(v, checkpoints._RestoreOnly) for m in loaded.modules() for v in vars(m).values())
        x = torch.rand(1, 3, IMGSZ, IMGSZ)
        with torch.no_grad():
            assert torch.equal(loaded(x)[0], model(x)[0])


# ---- every script --------------------------------------------------------------------------------------
def _options_yaml(task: str, argv) -> str:
    """The opt.yaml a run of `task` with `argv` writes (YOLOv5 dumps vars(opt))."""
    opt, _ = parse(task, [str(a) for a in argv])
    return yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in vars(opt).items()})


@pytest.fixture(scope="module")
def payloads(tmp_path_factory, demo):
    """{(family, kind): (runs/<family>-<kind>/exp/weights/last.pt, marker)} for family det/seg and kind
    call/activation/module/argument, each a run folder with its opt.yaml; plus {(family, 'cfg-'+kind):
    (poisoned model YAML, marker)}. Built once."""
    root, markers = tmp_path_factory.mktemp("payloads"), tmp_path_factory.mktemp("markers")
    out = {}
    for family, cls, cfg, data, task in [("det", yolo.DetectionModel, DET_CFG, demo["det_yaml"], "train"),
                                         ("seg", yolo.SegmentationModel, SEG_CFG, demo["seg_yaml"], "segment-train")]:
        clean = cls(str(cfg), nc=len(demo["names"]))
        for kind in ("call", *YAML_KINDS):
            marker = markers / f"{family}-{kind}"
            run = root / f"{family}-{kind}" / "exp"
            (run / "weights").mkdir(parents=True)
            model = copy.deepcopy(clean)
            model.yaml = poisoned(model.yaml, "activation" if kind == "call" else kind, marker)
            saved = Calls(cls, model.yaml) if kind == "call" else model.half()
            ckpt = {"epoch": 0, "best_fitness": 0.0, "model": saved, "ema": None if kind == "call" else saved,
                    "updates": 0, "optimizer": torch.optim.SGD(clean.parameters(), lr=0.01).state_dict(),
                    "opt": None, "git": None, "date": "2024-01-01T00:00:00"}
            torch.save(ckpt, run / "weights" / "last.pt")
            (run / "opt.yaml").write_text(_options_yaml(task, ["--cfg", cfg, "--data", data, "--epochs", "3",
                                                                *TRAIN_FLAGS, "--project", run.parent]))
            out[family, kind] = run / "weights" / "last.pt", marker
        for kind in YAML_KINDS:
            marker = markers / f"{family}-cfg-{kind}"
            path = root / f"{family}-{kind}.yaml"
            path.write_text(yaml.safe_dump(poisoned(yaml.safe_load(cfg.read_text()), kind, marker), sort_keys=False))
            out[family, f"cfg-{kind}"] = path, marker
    return out


def _visualize(argv) -> int:
    """scripts/visualize_attention.py's main, in this process."""
    return runpy.run_path(str(REPO / "scripts" / "visualize_attention.py"))["main"]([str(a) for a in argv])


# script -> (family, how to run it with weights w, output folder o)
SCRIPTS = {
    "detect": ("det", lambda w, o, d: run_task("detect", "--weights", w, "--source", d["val_images"],
                                                "--imgsz", IMGSZ, "--device", "cpu", "--project", o)),
    "val": ("det", lambda w, o, d: run_task("val", "--weights", w, "--data", d["det_yaml"], "--imgsz", IMGSZ,
                                             "--device", "cpu", "--project", o)),
    "train --weights": ("det", lambda w, o, d: run_task("train", "--weights", w, "--data", d["det_yaml"],
                                                         "--epochs", 1, *TRAIN_FLAGS, "--project", o)),
    "train --resume": ("det", lambda w, o, d: run_task("train", "--resume", w)),
    "export": ("det", lambda w, o, d: run_task("export", "--weights", w, "--include", "onnx", "--imgsz", IMGSZ,
                                                "--device", "cpu")),
    "visualize_attention": ("det", lambda w, o, d: _visualize(["--weights", w, "--source", d["val_images"],
                                                               "--imgsz", IMGSZ, "--project", o])),
    "segment/predict": ("seg", lambda w, o, d: run_task("segment-predict", "--weights", w, "--source",
                                                         d["seg_val_images"], "--imgsz", IMGSZ, "--device", "cpu",
                                                         "--project", o)),
    "segment/val": ("seg", lambda w, o, d: run_task("segment-val", "--weights", w, "--data", d["seg_yaml"],
                                                     "--imgsz", IMGSZ, "--device", "cpu", "--project", o)),
    "segment/train --weights": ("seg", lambda w, o, d: run_task("segment-train", "--weights", w, "--data",
                                                                 d["seg_yaml"], "--epochs", 1, *TRAIN_FLAGS,
                                                                 "--project", o)),
}


def _files(folder: Path) -> list:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _one_error_line(err: str) -> str:
    """The single `error:` line of a run's stderr (asserting there is exactly one, last, and no traceback)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("kind", ["call", *YAML_KINDS])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_no_script_runs_a_payload_checkpoint(script, kind, payloads, demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(checkpoints.TRUST_ENV, "0")
    family, run = SCRIPTS[script]
    weights, marker = payloads[family, kind]
    before = _files(weights.parents[2])
    assert run(weights, tmp_path / "runs", demo) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"checkpoint {weights}" in line and NAMED[kind] in line, line
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() and _files(weights.parents[2]) == before  # nothing written


def test_trust_flag_does_not_make_the_model_yaml_run(payloads, demo, tmp_path, capsys, monkeypatch):
    """--trust-checkpoint unpickles fully, so the file's DetectionModel(cfg) call happens, but its cfg is
    still built without eval: refused, the marker is not written."""
    monkeypatch.setenv(checkpoints.TRUST_ENV, "0")
    weights, marker = payloads["det", "call"]
    assert run_task("detect", "--weights", weights, "--source", demo["val_images"], "--imgsz", IMGSZ,
                    "--project", tmp_path / "runs", "--trust-checkpoint") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: checkpoint {weights}: model YAML activation ") and not marker.exists()


@pytest.mark.parametrize("kind", YAML_KINDS)
@pytest.mark.parametrize("family,task", [("det", "train"), ("seg", "segment-train")])
def test_cfg_yaml_expressions_are_never_evaluated(family, task, kind, payloads, demo, tmp_path, capsys):
    cfg, marker = payloads[family, f"cfg-{kind}"]
    data = demo["det_yaml"] if family == "det" else demo["seg_yaml"]
    assert run_task(task, "--cfg", cfg, "--data", data, "--epochs", 1, *TRAIN_FLAGS, "--project",
                    tmp_path / "runs") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --cfg {cfg}: {NAMED[kind]}") and not marker.exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script,kind", [("detect.py", "call"), ("visualize_attention.py", "activation")])
def test_real_processes_exit_2_with_one_line(script, kind, payloads, demo, tmp_path):
    weights, marker = payloads["det", kind]
    result = run_script(script, "--weights", weights, "--source", demo["val_images"], "--imgsz", IMGSZ,
                        "--project", tmp_path / "runs", cwd=tmp_path, log=tmp_path / "net.log")
    assert result.returncode == 2, result.stderr
    assert f"checkpoint {weights}" in _one_error_line(result.stderr) and not marker.exists()
    assert not (tmp_path / "runs").exists()



def test_a_parse_model_with_other_eval_calls_is_refused(tmp_path):
    """The rewrite knows exactly YOLOv5 7.0's three eval calls; it refuses a parse_model with another."""
    import types
    path = tmp_path / "fake_yolo.py"
    path.write_text("def parse_model(d, ch):\n"
                    "    m = eval(m) if isinstance(m, str) else m\n"
                    "    Conv.default_act = eval(act)\n"
                    "    args[j] = eval(a) if isinstance(a, str) else a\n"
                    "    extra = eval(d['extra'])\n"
                    "    return m in {Conv, C3}, m in {C3}\n")
    fake = types.ModuleType("fake_yolo")
    fake.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), vars(fake))
    with pytest.raises(registry.UnsupportedYOLOv5, match="eval calls"):
        registry._patched_parse_model(fake)
    path.write_text(path.read_text().replace("    extra = eval(d['extra'])\n", ""))
    exec(compile(path.read_text(), str(path), "exec"), vars(fake))
    import linecache
    linecache.checkcache(str(path))
    try:
        assert registry._patched_parse_model(fake).__wrapped__ is fake.parse_model  # the three known ones alone are rewritten
    finally:
        patching.undo(where=lambda change: change.owner is fake)  # leave no journal entry for later tests


# ---- classic pickle payloads (the sweep's 48 runs: four ways to run code, nested in model/opt/ema) --------------
class _Reduce:
    """Unpickling this calls `fn(*args)`."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _raw_global_pickle(marker: Path) -> bytes:
    """A protocol-2 pickle written by hand: GLOBAL posix.system, then a call of it with a shell command."""
    command = f"touch {marker}".encode()
    return (b"\x80\x02cposix\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command
            + b"q\x01\x85q\x02Rq\x03.")


def _classic_payload(kind: str, place: str, marker: Path, path: Path) -> Path:
    """A torch zip checkpoint at `path` whose unpickling would create `marker`, the code hidden at `place`."""
    import os
    import subprocess
    if kind == "raw GLOBAL":  # a real checkpoint whose data.pkl is replaced by the hand-written pickle
        torch.save({"model": None}, path)
        with zipfile.ZipFile(path) as z:
            members = {name: z.read(name) for name in z.namelist()}
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, _raw_global_pickle(marker) if name.endswith("data.pkl") else data)
        return path
    code = {"os.system": _Reduce(os.system, f"touch {marker}"),
            "eval": _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)])}[kind]
    ckpt = {"epoch": 0, "model": None, "ema": None, "opt": {}, "optimizer": None}
    ckpt[place] = {"nested": [code]} if place == "opt" else code
    torch.save(ckpt, path)
    return path


CLASSIC_KINDS = ["os.system", "eval", "subprocess.Popen", "raw GLOBAL"]


@pytest.mark.parametrize("place", ["model", "opt", "ema"])
@pytest.mark.parametrize("kind", CLASSIC_KINDS)
def test_classic_pickle_payloads_are_refused_by_the_loader(kind, place, tmp_path):
    marker = tmp_path / "pwned"
    path = _classic_payload(kind, place, marker, tmp_path / "last.pt")
    with pytest.raises(UserError, match="not on the safe allowlist") as e:
        checkpoints.load(path, trust=False)
    assert "\n" not in str(e.value)
    time.sleep(0.2)  # a Popen that did start would have touched the marker by now
    assert not marker.exists()


@pytest.mark.parametrize("kind", CLASSIC_KINDS)
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_no_script_runs_a_classic_pickle_payload(script, kind, demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(checkpoints.TRUST_ENV, "0")
    marker = tmp_path / "pwned"
    (tmp_path / "run" / "weights").mkdir(parents=True)
    weights = _classic_payload(kind, "model", marker, tmp_path / "run" / "weights" / "last.pt")
    _, run = SCRIPTS[script]
    assert run(weights, tmp_path / "runs", demo) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"checkpoint {weights}" in line or f"--resume {weights}" in line, line
    time.sleep(0.2)
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", CLASSIC_KINDS)
def test_classic_payloads_do_run_under_full_pickle(kind, tmp_path):
    """Control: each payload above is real — a plain `torch.load(weights_only=False)` runs it."""
    marker = tmp_path / "pwned"
    path = _classic_payload(kind, "model", marker, tmp_path / "last.pt")
    try:
        torch.load(path, weights_only=False)
    except Exception:  # what the payload returns is no checkpoint; running it was the point
        pass
    deadline = time.time() + 5
    while not marker.exists() and time.time() < deadline:  # Popen runs in the background
        time.sleep(0.05)
    assert marker.exists()
