"""The one patching mechanism (yolov5_dattn/patching.py) and the documented list of changes to YOLOv5."""
import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from yolov5_dattn import patching

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host():
    """A throwaway 'host': a module with a function, a class, and a module that imported the function by name."""
    lib = types.ModuleType("fakehost.lib")
    exec("def f(x):\n    return x + 1\n\nclass K:\n    def m(self):\n        return 'm'\n", vars(lib))
    user = types.ModuleType("fakehost.user")
    user.f = lib.f
    yield lib, user
    patching.undo(where=lambda c: c.owner in (lib, user, lib.K))


def test_patch_records_replaces_everywhere_and_undoes(host):
    lib, user = host
    original = lib.f

    def f(x):
        return original(x) * 10

    assert patching.patch(lib, "f", f, why="times ten", also=[user])
    assert lib.f(1) == 20 and user.f(1) == 20 and f.__wrapped__ is original
    assert patching.is_patched(lib, "f") and patching.is_patched(lib, "f", "times ten")
    assert not patching.is_patched(lib, "f", "another reason")
    [change] = patching.changes("fakehost.lib.f")
    assert change.where == "fakehost.lib.f" and change.why == "times ten" and change.also == [user]
    assert patching.undo(where=lambda c: c.owner is lib) == 1
    assert lib.f is original and user.f is original and not patching.is_patched(lib, "f")


def test_same_why_is_a_no_op_and_different_ones_stack(host):
    lib, _ = host
    original = lib.f
    assert patching.patch(lib, "f", lambda x: original(x) * 10, why="a")
    first = lib.f
    assert not patching.patch(lib, "f", lambda x: 0, why="a")  # in place already
    assert lib.f is first
    assert patching.patch(lib, "f", lambda x: first(x) + 5, why="b")
    assert lib.f(1) == 25
    # "a" is still in effect (wrapped by "b"): patching it again changes nothing
    assert patching.is_patched(lib, "f", "a") and not patching.patch(lib, "f", lambda x: 0, why="a")
    assert patching.undo(1) == 1 and lib.f is first
    assert patching.undo(1) == 1 and lib.f is original


def test_undoing_a_wrapped_change_restores_the_original_in_the_end(host):
    lib, _ = host
    original = lib.f
    patching.patch(lib, "f", lambda x: 1, why="a")
    patching.patch(lib, "f", lambda x: 2, why="b")
    patching.undo(where=lambda c: c.why == "a" and c.owner is lib)
    assert lib.f(0) == 2  # "b" stays
    patching.undo(where=lambda c: c.why == "b" and c.owner is lib)
    assert lib.f is original


def test_class_attributes_added_names_and_steps(host):
    lib, _ = host
    with patching.applying("fake.step"):
        patching.patch(lib.K, "m", lambda self: "patched", why="class attribute")
        patching.patch(lib, "NEW", 42, why="a new global")
    assert lib.K().m() == "patched" and lib.NEW == 42
    steps = {c.where: c.step for c in patching.changes("fakehost.lib")}
    assert steps == {"fakehost.lib.K.m": "fake.step", "fakehost.lib.NEW": "fake.step"}
    assert [c.added for c in patching.changes("fakehost.lib.NEW")] == [True]
    patching.undo(where=lambda c: c.step == "fake.step")
    assert lib.K().m() == "m" and not hasattr(lib, "NEW") and "m" in vars(lib.K)


def test_temporarily_undoes_on_exit_even_on_error(host):
    lib, _ = host
    original = lib.f
    with pytest.raises(KeyError):
        with patching.temporarily(lib, "f", lambda x: -1, why="during the block"):
            assert lib.f(3) == -1
            raise KeyError("x")
    assert lib.f is original and not patching.changes("fakehost.lib")


def test_override_gives_one_module_its_own_view(host):
    lib, _ = host
    import json as real_json
    lib.json = real_json
    patching.patch(lib, "json", real_json, why="setup")  # so the fixture's undo covers lib.json
    patching.override(lib, "json", "dumps", lambda obj: "overridden", why="dumps")
    patching.override(lib, "json", "decoder.JSONDecoder", "nested", why="nested")
    assert lib.json.dumps(1) == "overridden" and lib.json.loads("1") == 1 and lib.json.decoder.JSONDecoder == "nested"
    assert real_json.dumps(1) == "1" and real_json.decoder.JSONDecoder != "nested"  # the library is untouched
    assert not patching.override(lib, "json", "dumps", lambda obj: "again", why="dumps")
    patching.undo(where=lambda c: c.why in ("dumps", "nested"))
    assert lib.json is real_json


def test_replace_line_keeps_file_and_line_numbers(tmp_path):
    path = tmp_path / "hostmod.py"
    path.write_text("# header\n\ndef g(a):\n    b = a + 1  # the line\n    return b / 0 if a < 0 else b\n")
    module = types.ModuleType("hostmod")
    exec(compile(path.read_text(), str(path), "exec"), vars(module))
    edited = patching.replace_line(module.g, "b = a + 1  # the line", "b = a + 2  # the line")
    assert edited(1) == 3 and edited.__wrapped__ is module.g
    assert edited.__code__.co_filename == str(path) and edited.__code__.co_firstlineno == 3
    with pytest.raises(ZeroDivisionError) as e:
        edited(-5)
    assert e.traceback[-1].lineno + 1 == 5  # pytest counts from 0: the host's line 5
    assert patching.replace_line(module.g, "not in the source", "x") is None
    with pytest.raises(ValueError, match="one line"):
        patching.replace_line(module.g, "b = a + 1", "b = 1\nc = 2")


# ---- the full installation: every change to YOLOv5 is in the journal, and undo restores it exactly ----------
SNAPSHOT = r'''
import argparse, json, sys, types

def snapshot():
    """{owner: {name: id(value)}} for every loaded yolov5.* module, the classes defined in them, ArgumentParser."""
    out = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "yolov5" or name.startswith("yolov5.")):
            continue
        out[name] = {k: id(v) for k, v in vars(module).items()}
        for k, v in list(vars(module).items()):
            if isinstance(v, type) and v.__module__ == name:
                out[f"{name}.{v.__qualname__}"] = {a: id(b) for a, b in vars(v).items()}
    out["argparse.ArgumentParser"] = {k: id(v) for k, v in vars(argparse.ArgumentParser).items()}
    return out

keep = []  # the snapshot's values stay alive, so ids are not reused
def hold():
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "yolov5" or name.startswith("yolov5.")):
            keep.append(dict(vars(module)))
            keep.extend(dict(vars(v)) for v in list(vars(module).values()) if isinstance(v, type))
    keep.append(dict(vars(argparse.ArgumentParser)))

import yolov5_dattn
from yolov5_dattn import import_hook
# take the plugin's import hook out, so that YOLOv5 is first imported as it is, then install by hand what the
# hook would have installed (`yolov5_dattn.hosts.yolov5.install`)
hooks = [f for f in sys.meta_path if isinstance(f, import_hook._WhenImported) and f.name == "yolov5"]
assert hooks, "import yolov5_dattn should wait for yolov5's import"
for f in hooks:
    sys.meta_path.remove(f)
from yolov5_dattn.hosts.yolov5 import compat
compat.apply_before_import()  # numpy/Pillow/pkg_resources (not YOLOv5): the import itself needs them
import importlib
importlib.import_module("yolov5")
assert "yolov5.models.yolo" in sys.modules and not any(n.startswith("yolov5.") for n in
    {c.where for c in __import__("yolov5_dattn.patching", fromlist=["_"]).changes()})
hold()
{ENTRY}
hold()
before = snapshot()
from yolov5_dattn import patching
from yolov5_dattn.hosts.yolov5 import install
install()  # what `import yolov5_dattn` runs once yolov5 is imported
compat.apply_entrypoints()
after = snapshot()
journal = {(c.where, c.name) for c in patching.changes()}
owners = {}
for c in patching.changes():  # the owner, and the modules that had imported the original by name (`also`)
    for owner in [c.where[: -len(c.name) - 1]] + [m.__name__ for m in c.also]:
        owners.setdefault(owner, set()).add(c.name)
unrecorded = []
for owner, attrs in after.items():
    old = before.get(owner, {})
    for name, value in attrs.items():
        if old.get(name) != value and name not in owners.get(owner, set()):
            unrecorded.append(f"{owner}.{name}")
n = len(patching.changes())
patching.undo()
restored = snapshot()
diff = sorted(f"{o}.{k}" for o in set(before) | set(restored)
              for k in set(before.get(o, {})) | set(restored.get(o, {}))
              if before.get(o, {}).get(k) != restored.get(o, {}).get(k))
changed = sum(before.get(o, {}).get(k) != v for o, a in after.items() for k, v in a.items())
print(json.dumps({"changes": n, "changed": changed, "unrecorded": sorted(unrecorded), "not_restored": diff}))
'''


def test_every_change_to_yolov5_is_recorded_and_undo_restores_it():
    # the entry modules are imported before the snapshot, so the diff is what the plugin changed in them
    entry = "\n".join(f"importlib.import_module('yolov5.{m}')" for m in
                      ("train", "val", "detect", "export", "segment.train", "segment.val", "segment.predict"))
    code = SNAPSHOT.replace("{ENTRY}", entry)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["changes"] > 40  # the shims, the hook, the summary, the entry modules
    assert report["changed"] >= report["changes"]  # the snapshot saw them (each in its owner, some also elsewhere)
    assert report["unrecorded"] == []
    assert report["not_restored"] == []


def test_changes_list_documents_every_step_that_made_a_change():
    """Every change in the journal after a full install names a documented step with its YOLOv5 line."""
    result = subprocess.run([sys.executable, "-m", "yolov5_dattn", "changes"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    from yolov5_dattn.hosts.yolov5 import changes
    headers = [line for line in out.splitlines() if line and not line.startswith(("  ", "process settings"))]
    assert headers and all(", YOLOv5 " in h for h in headers), headers  # no change outside a documented step
    assert {h.split("(")[1].split(",")[0] for h in headers} <= {"plugin", "repair", "policy"}
    names = {h.split()[0] for h in headers}
    assert {"policy.shim_fonts_offline", "registry.install_hook", "summary.install", "shipped.install",
            "policy.shim_resume_beside_checkpoint", "summary.install_sizes", "data_yaml.install",
            "transfer.install", "square_inputs.install"} <= names
    assert names <= {s.name for s in changes.STEPS}
    assert "  yolov5.models.yolo.parse_model: parse_model learns the registered modules" in out
    assert "  yolov5.train.main: --resume writes beside the checkpoint it was given" in out
    help_text = subprocess.run([sys.executable, "-m", "yolov5_dattn", "--help"], capture_output=True, text=True,
                               timeout=300, cwd=ROOT).stdout
    assert "changes" in help_text and "registry" in help_text


def test_steps_are_ordered_and_documented():
    from yolov5_dattn.hosts.yolov5 import changes
    for step in changes.STEPS:
        assert step.phase in changes.PHASES and step.why and step.line and step.targets
        assert step.kind in ("plugin", "repair", "policy")
        assert callable(step.resolve()), step.name
    model = [s.name for s in changes.steps("model")]
    assert model.index("policy.shim_no_dataset_downloads") < model.index("policy.shim_backend_names_literal")
    entry = [s.name for s in changes.steps("entrypoints")]
    # the line edit of train() reads YOLOv5's source: it must come before anything wraps train()
    assert entry.index("repairs.shim_noval_map50s") < entry.index("summary.install_sizes")
    assert entry.index("policy.shim_resume_beside_checkpoint") < entry.index("repairs.shim_fresh_callbacks")


def test_parsing_is_temporary():
    from yolov5_dattn.hosts.yolov5 import entrypoint
    real = argparse.ArgumentParser.parse_known_args
    with entrypoint.parsing(["--x", "1"], "prog", lambda p: p.add_argument("--x")):
        assert [c.step for c in patching.changes("argparse")] == ["entrypoint.parsing"]
        assert argparse.ArgumentParser().parse_args().x == "1"
    assert argparse.ArgumentParser.parse_known_args is real and not patching.changes("argparse")


def test_a_blocked_host_does_not_stop_the_import_and_registers_once_unblocked():
    """`sys.modules["yolov5"] = None` makes YOLOv5 unimportable: the plugin still imports (the math works), and
    once the block is lifted, importing YOLOv5 registers the blocks as usual."""
    script = ("import sys\n"
              "sys.modules['yolov5'] = None\n"
              "import yolov5_dattn\n"
              "import torch\n"
              "y = yolov5_dattn.DAttention(32, (4, 4), n_heads=2, n_groups=1)(torch.randn(1, 32, 4, 4))\n"
              "try:\n"
              "    import yolov5\n"
              "    print('imported')\n"
              "except ImportError:\n"
              "    print('blocked')\n"
              "del sys.modules['yolov5']\n"
              "import yolov5.models.yolo as yolo\n"
              "print(tuple(y.shape), hasattr(yolo, 'C3_DAttention'))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["blocked", "(1,", "32,", "4,", "4)", "True"]
