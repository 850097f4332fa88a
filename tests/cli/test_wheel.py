"""The wheel alone: built from this checkout, installed into a fresh venv that never sees the checkout, and
used from an empty folder through `yolov5-dattn`: train one epoch on a shipped config by its bare name,
detect on an image folder, export ONNX, list the shipped configs, refuse an unknown command. Offline.

The venv gets the wheel with `--no-deps`; its dependencies (torch, yolov5, ...) come from this project's
venv through a plain path line in a .pth file, which runs none of that folder's own .pth files, so the
editable install of yolov5_dattn there (an import hook installed by its .pth) cannot shadow the wheel.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import NETGUARD, REPO, TRAIN_FLAGS

BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md")  # what setup.cfg reads, besides the package


def _run(command, cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel built and installed into a fresh venv; returns its paths and an offline environment."""
    root = tmp_path_factory.mktemp("wheel")
    # build from a copy: pip builds in the source tree (build/, *.egg-info), and this checkout is shared
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "yolov5_dattn", src / "yolov5_dattn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
              "-w", root / "dist", src], cwd=root))
    (wheel,) = (root / "dist").glob("yolov5_dattn-*.whl")

    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root))
    python = venv / "bin" / "python"
    # installed before the dependencies' path is added: pip then sees no yolov5-dattn already installed
    _ok(_run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
             cwd=root))
    purelib = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            cwd=root)).stdout.strip())
    (purelib / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = root / "work"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=str(NETGUARD), NETGUARD_LOG=str(root / "net.log"), PATH=f"{venv / 'bin'}{os.pathsep}"
               f"{env.get('PATH', '')}")
    return {"wheel": wheel, "venv": venv, "python": python, "purelib": purelib, "cli": venv / "bin" / "yolov5-dattn",
            "cwd": empty, "env": env, "net_log": root / "net.log"}


def test_wheel_carries_the_configs_and_the_command(installed):
    import zipfile
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for shipped in ("yolov5n_c3_dattn.yaml", "yolov5x_c3_dattn.yaml", "yolov5s_c3_dattn_p4.yaml",
                    "yolov5s_c3_dattn_p3p4p5.yaml", "segment/yolov5n-seg_c3_dattn.yaml", "demo_shapes.yaml",
                    "segment/demo_shapes-seg.yaml", "hyp.demo.yaml"):
        assert f"yolov5_dattn/configs/{shipped}" in names
    assert "yolov5_dattn/__main__.py" in names and "yolov5_dattn/cli/demo.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "yolov5-dattn = yolov5_dattn.cli:main" in zipfile.ZipFile(installed["wheel"]).read(entry_points).decode()
    assert installed["cli"].is_file()


def test_the_venv_imports_the_wheel_not_the_checkout(installed):
    out = _ok(_run([installed["python"], "-c", "import yolov5_dattn, yolov5; print(yolov5_dattn.__file__)"],
                   cwd=installed["cwd"], env=installed["env"])).stdout.strip().splitlines()[-1]
    assert Path(out).parent == installed["purelib"] / "yolov5_dattn"


def test_help_lists_the_commands_and_an_unknown_one_is_one_error_line(installed):
    out = _ok(_run([installed["cli"], "--help"], cwd=installed["cwd"], env=installed["env"])).stdout
    for command in ("train", "val", "detect", "export", "segment", "compare", "visualize", "demo", "configs"):
        assert any(line.split()[:1] == [command] for line in out.splitlines()), command
    bad = _run([installed["cli"], "nonsense"], cwd=installed["cwd"], env=installed["env"])
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert errors == [bad.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("error: yolov5-dattn nonsense: unknown command")
    assert "Traceback" not in bad.stderr and bad.stdout == ""


def test_configs_lists_the_shipped_yamls_with_parameter_counts(installed):
    from yolov5.models.yolo import parse_model

    from yolov5_dattn.shipped import CONFIGS, list_configs

    out = _ok(_run([installed["python"], "-m", "yolov5_dattn", "configs"], cwd=installed["cwd"],
                   env=installed["env"])).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(list_configs()) <= set(rows)
    for name in ("yolov5n_c3_dattn.yaml", "segment/yolov5n-seg_c3_dattn.yaml"):
        n_params = sum(p.numel() for p in parse_model(yaml.safe_load((CONFIGS / name).read_text()), ch=[3])[0]
                       .parameters())
        assert f" {n_params:,} " in rows[name]
    assert f"(in {installed['purelib'] / 'yolov5_dattn' / 'configs'})" in out  # the wheel's copy


def test_train_detect_export_from_an_empty_folder(installed, demo):
    cwd, env, cli = installed["cwd"], installed["env"], installed["cli"]
    train = _run([cli, "train", "--cfg", "yolov5n_c3_dattn.yaml", "--hyp", "hyp.demo.yaml", "--data", demo["det_yaml"],
                  "--epochs", "1", *TRAIN_FLAGS, "--noplots"], cwd=cwd, env=env)
    _ok(train)
    run = cwd / "runs" / "train" / "exp"
    last = run / "weights" / "last.pt"
    assert last.is_file() and (run / "results.csv").is_file()
    opt = yaml.safe_load((run / "opt.yaml").read_text())
    assert Path(opt["cfg"]) == installed["purelib"] / "yolov5_dattn" / "configs" / "yolov5n_c3_dattn.yaml"
    assert yaml.safe_load((run / "hyp.yaml").read_text())["lr0"] == yaml.safe_load(
        (REPO / "configs" / "hyp.demo.yaml").read_text())["lr0"]

    images = sorted(Path(demo["val_images"]).glob("*.png"))
    _ok(_run([cli, "detect", "--weights", last, "--source", demo["val_images"], "--imgsz", "64", "--device", "cpu"],
             cwd=cwd, env=env))
    assert sorted(p.name for p in (cwd / "runs" / "detect" / "exp").glob("*.png")) == [p.name for p in images]

    _ok(_run([cli, "export", "--weights", last, "--include", "onnx", "--imgsz", "64", "--device", "cpu"],
             cwd=cwd, env=env))
    onnx_file = last.with_suffix(".onnx")
    import onnx
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert not installed["net_log"].exists() or installed["net_log"].read_text() == ""


def test_demo_runs_from_an_empty_folder(installed, tmp_path):
    """The smallest demo (8 images, 1 epoch, no compare): every step through the installed command, all
    output under ./demo of the current folder."""
    result = _ok(_run([installed["cli"], "demo", "--n-train", "8", "--n-val", "4", "--epochs", "1", "--batch-size", "4",
                       "--workers", "0", "--no-compare"], cwd=tmp_path, env=installed["env"]))
    demo = tmp_path / "demo"
    assert (demo / "runs" / "train" / "demo" / "weights" / "best.pt").is_file()
    assert len(list((demo / "runs" / "detect" / "images").glob("*.png"))) == 4
    assert (demo / "runs" / "detect" / "video" / "shapes.mp4").stat().st_size > 0
    assert "=== demo finished" in result.stdout and "mAP50" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing written beside it
