"""scripts/compare.py: the baseline it picks, its bad-input messages, one real run's --json and --plot, and the
commit/date stamp they carry."""
import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import load_script
from yolov5_dattn.analysis.comparison import (compare, default_baseline, format_table, parse_device, resolve_cfg,
                                             yolov5_models_dir)
from yolov5_dattn.analysis import stamp as stamp_mod
from yolov5_dattn.analysis.compare_plot import footer
from yolov5_dattn.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_compare(capsys, monkeypatch):
    """Run scripts/compare.py's main() in this process (the package is already imported): (rc, stdout, stderr)."""
    monkeypatch.chdir(REPO)
    script = load_script("compare.py")

    def run(*args):
        rc = script.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.mark.parametrize("cfg, baseline", [
    ("configs/yolov5l_c3_dattn.yaml", "yolov5l.yaml"),
    ("configs/yolov5n_c3_dattn.yaml", "yolov5n.yaml"),
    ("configs/segment/yolov5s-seg_c3_dattn.yaml", "segment/yolov5s-seg.yaml"),
    ("configs/segment/yolov5x-seg_c3_dattn.yaml", "segment/yolov5x-seg.yaml"),
])
def test_default_baseline_is_same_scale_same_task(cfg, baseline):
    assert default_baseline(REPO / cfg) == yolov5_models_dir() / baseline


def test_default_baseline_reads_the_multiples_not_the_file_name(tmp_path):
    renamed = tmp_path / "my_model.yaml"
    renamed.write_text((REPO / "configs" / "yolov5s_c3_dattn.yaml").read_text())
    assert default_baseline(renamed) == yolov5_models_dir() / "yolov5s.yaml"


def test_baselines_by_name_and_bad_inputs_are_one_line_user_errors(tmp_path):
    assert resolve_cfg("yolov5m.yaml") == yolov5_models_dir() / "yolov5m.yaml"
    assert resolve_cfg("yolov5m-seg") == yolov5_models_dir() / "segment" / "yolov5m-seg.yaml"
    with pytest.raises(UserError, match="--baseline yolov5q.yaml"):
        resolve_cfg("yolov5q.yaml", "--baseline")
    with pytest.raises(UserError, match="--device cuda:0: no CUDA device") if not _has_cuda() else _nothing():
        parse_device("cuda:0")
    with pytest.raises(UserError, match="--batch 0"):
        compare(["configs/yolov5n_c3_dattn.yaml"], batch=0)
    not_a_model = tmp_path / "data.yaml"
    not_a_model.write_text("train: images\nnc: 3\n")
    with pytest.raises(UserError, match="not a YOLOv5 model YAML"):
        compare([str(not_a_model)])
    odd = tmp_path / "odd.yaml"
    odd.write_text("depth_multiple: 0.9\nwidth_multiple: 0.9\nbackbone: []\nhead: []\n")
    with pytest.raises(UserError, match="pass --baseline"):
        compare([str(odd)])


def _has_cuda():
    import torch
    return torch.cuda.is_available()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cli_bad_input_exits_2_with_one_line(run_compare, tmp_path):
    rc, out, err = run_compare("--cfg", "configs/nope.yaml", "--json", tmp_path / "x.json")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: --cfg configs/nope.yaml: no such file")
    assert not list(tmp_path.iterdir())  # nothing written


def test_imgsz_must_suit_the_strides():
    with pytest.raises(UserError) as e:
        compare(["configs/yolov5n_c3_dattn.yaml"], imgsz=[100], memory=False)
    assert str(e.value) == "--imgsz 100: not a multiple of the models' largest stride 32: use --imgsz 128"


def test_cli_json_plot_and_table(run_compare, tmp_path):
    out_json, out_png = tmp_path / "sub" / "cmp.json", tmp_path / "cmp.png"
    rc, out, err = run_compare("--cfg", "configs/yolov5n_c3_dattn.yaml", "--imgsz", "128", "--runs", "1",
                               "--warmup", "0", "--json", out_json, "--plot", out_png)
    assert rc == 0, err
    result = json.loads(out_json.read_text())
    assert result["commit"] == stamp_mod.code_version()
    assert timedelta(0) <= datetime.now(timezone.utc) - datetime.fromisoformat(result["date"]) < timedelta(hours=1)
    # the table's header names them too
    assert f"commit {result['commit']}, {result['date']}, torch {result['torch']}" in out.splitlines()
    assert result["imgsz"] == [128, 128] and result["batch"] == 1 and result["device"].startswith("cpu: ")
    base, ours = result["models"]  # the baseline first
    assert (base["name"], ours["name"]) == ("yolov5n", "yolov5n_c3_dattn")
    assert base["baseline"] is None and ours["baseline"] == "yolov5n"
    keys = {"name", "cfg", "params", "gflops_thop", "gflops", "latency_ms", "peak_mem_mb", "train_peak_mem_mb",
            "layers"}
    assert keys <= set(base) and keys <= set(ours)
    assert (base["params"], ours["params"]) == (1_872_157, 1_939_933)
    # at 128 px P5 is 4×4: one DAttention with C = 128, HW = Ns = 16
    (layer,) = ours["layers"]
    assert layer["name"] == "model.8.m.0.attention" and layer["layer"] == 8
    assert layer["gflops_attention_matmuls"] * 1e9 == pytest.approx(2 * 2 * 16 * 16 * 128)
    assert 0 < layer["flops_share"] < 1 and 0 < layer["time_share"] < 1 and layer["time_ms"] > 0
    assert ours["gflops_attention"] == pytest.approx(layer["gflops"])
    assert ours["gflops"] > base["gflops"] and base["layers"] == []
    for m in (base, ours):
        assert m["latency_ms"] > 0
        # a training step holds at least every parameter's gradient (fp32)
        assert m["train_peak_mem_mb"] >= m["params"] * 4 / 2 ** 20
        assert 0 < m["peak_mem_mb"] < m["train_peak_mem_mb"]
    assert "yolov5n_c3_dattn" in out and "model.8.m.0.attention" in out
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_stamp_is_the_checkouts_commit():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert stamp_mod.code_version() == head + ("+dirty" if dirty else "")


def test_stamp_outside_a_checkout_is_the_package_version(tmp_path, monkeypatch):
    import yolov5_dattn
    monkeypatch.setattr(stamp_mod, "ROOT", tmp_path)  # like a wheel in site-packages: no .git
    assert stamp_mod.code_version() == f"yolov5-dattn {yolov5_dattn.__version__}"
    if shutil.which("git"):  # a wheel inside another project's repository still reports the version
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        monkeypatch.setattr(stamp_mod, "ROOT", tmp_path / "site-packages")
        (tmp_path / "site-packages").mkdir()
        assert stamp_mod.code_version() == f"yolov5-dattn {yolov5_dattn.__version__}"
    s = stamp_mod.stamp()
    assert set(s) == {"commit", "date"} and datetime.fromisoformat(s["date"]).tzinfo is not None


def test_plot_footer_names_commit_date_and_torch():
    text = footer({"commit": "abc1234", "date": "2026-12-02T00:30:00+00:00", "torch": "2.14.1", "threads": 2})
    assert text == "commit abc1234, 2026-12-02T00:30:00+00:00, torch 2.14.1, 2 threads"
    assert footer({}) == "commit unknown, date unknown"  # a JSON from before the stamp still plots


def test_plot_marks_latency_timed_on_a_busy_machine():
    from yolov5_dattn.analysis.compare_plot import timing_is_noisy
    assert timing_is_noisy({"load_average": 8.6, "threads": 2})
    assert not timing_is_noisy({"load_average": 1.4, "threads": 2})  # the measurement's own threads
    assert not timing_is_noisy({"threads": 2}) and not timing_is_noisy({"load_average": 9.0})


def test_train_step_is_timed_per_model_and_shown_against_the_baseline():
    result = compare(["configs/yolov5n_c3_dattn.yaml"], imgsz=[64], runs=1, warmup=0, memory=False, train_step=True)
    base, ours = result["models"]
    assert base["name"] == "yolov5n" and ours["baseline"] == "yolov5n"
    assert base["train_step_ms"] > 0 and ours["train_step_ms"] > 0
    table = format_table(result)
    assert "train step" in table and f"{ours['train_step_ms'] / base['train_step_ms']:.2f}x" in table
    # without the flag nothing is timed and the table has no such column
    plain = compare(["configs/yolov5n_c3_dattn.yaml"], imgsz=[64], runs=1, warmup=0, memory=False)
    assert plain["models"][1]["train_step_ms"] is None and "train step" not in format_table(plain)
