"""scripts/benchmark_attention.py measures (its numbers are machine-dependent, so only their presence and
consistency are checked here) and refuses bad flags with one line."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

from conftest import load_script
from yolov5_dattn.nn import cpu_attention

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_attention.py"


def test_one_case_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--levels", "P5", "--batch", "1", "--passes", "fwd",
                           "--runs", "2", "--repeats", "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    ref, fast = row["reference"], row["fast"]
    assert result["matmul_peak_gflops"]["fp32"] > 1
    assert fast["runs"] == ref["runs"] == 2 and fast["repeats"] == ref["repeats"] == 2  # two timing processes
    # the speed-up is the median of the paired calls' ratios: 2 pairs in each of the 2 processes
    pairs = row["paired_speedups"]
    assert len(pairs) == 4 and all(p > 0 for p in pairs) and row["speedup"] == statistics.median(pairs)
    # memory from a process of its own, with large blocks handed back when freed (and timed there too)
    assert fast["peak_mb"] > 0 and ref["peak_mb"] > 0 and row["memory_ratio"] == ref["peak_mb"] / fast["peak_mb"]
    assert fast["memory_run_median_s"] > 0 and ref["memory_run_median_s"] > 0
    # 64 channels per head at P5: ours where it can be built (as in CI), else PyTorch's
    expected = "ours (cpu_attention)" if cpu_attention.library() is not None else "sdpa"
    assert fast["kernel"] == expected and ref["kernel"] == "explicit"
    # FLOPs of the same computation: equal up to the reference's extra elementwise ops, which are not counted
    assert abs(fast["gflop"] - ref["gflop"]) / ref["gflop"] < 0.01
    # each fraction is against the matmul peak measured in that case's own process
    assert fast["fraction_of_peak"] == fast["gflop"] / fast["median_s"] / fast["matmul_peak_gflops"]
    assert 0 < fast["fraction_of_peak"] < 1.5
    assert result["matmul_peak_gflops"]["fp32"] >= max(fast["matmul_peak_gflops"], ref["matmul_peak_gflops"])
    assert "P5     512  20x20   1 fwd" in proc.stdout and f"fast attention kernel at P5: {expected}" in proc.stdout


def test_bad_flag_is_one_line_exit_2():
    for flag, message in (("--runs", "--runs 1: must be at least 2"), ("--repeats", "--repeats 0: must be at least 1")):
        value = "1" if flag == "--runs" else "0"
        proc = subprocess.run([sys.executable, str(SCRIPT), flag, value], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"error: {message}"


def test_a_failed_paired_process_falls_back_to_one_process_each(monkeypatch):
    """If the process timing both dies (say the reference runs out of memory), each implementation is timed
    alone: the fast one's figures survive and the reference's error is reported, not a crash."""
    bench = load_script("benchmark_attention.py")
    calls = []

    def fake_process(job):
        calls.append(job.get("impls") or job.get("impl") or job["what"])
        if job["what"] == "peak":
            return {"gflops": 100.0}
        if job["measure"] == "memory":
            return {"peak_mb": 10.0, "memory_run_median_s": 0.01}
        if job["impls"] == ["fast"]:
            return {"fast": {"median_s": 0.02, "runs": 2, "gflop": 1.0, "kernel": "sdpa", "matmul_peak_gflops": 100.0}}
        return {"error": "MemoryError"}  # both together, or the reference alone

    monkeypatch.setattr(bench, "in_fresh_process", fake_process)
    result = bench.run_table(bench.parse_args(["--levels", "P5", "--batch", "1", "--passes", "fwd"]))
    (row,) = result["rows"]
    assert calls[1:4] == [["reference", "fast"], ["reference"], ["fast"]]
    assert row["reference"] == {"error": "MemoryError"} and "speedup" not in row
    assert row["fast"]["median_s"] == 0.02 and row["fast"]["fraction_of_peak"] == 1.0 / 0.02 / 100.0
    assert bench.format_row(row).split("|")[1].split() == ["error", "20", "-x"]


def test_configs_layers_are_the_models_attention_shapes():
    """The P3/P4/P5 layers of yolov5s_c3_dattn_p3p4p5 at 640: 8 heads on c_ = c2 / 2 channels (c2 = 128, 256, 512
    at the s scale), on the 80, 40 and 20 px maps; every shipped detection config's widths are compiled in our kernel."""
    bench = load_script("benchmark_attention.py")
    layers = bench.dattention_layers(str(bench.resolve_cfg("yolov5s_c3_dattn_p3p4p5.yaml")), 640)
    shapes = sorted({(layer["channels"], layer["head_dim"], tuple(layer["hw"])) for layer in layers})
    assert shapes == [(64, 8, (80, 80)), (128, 16, (40, 40)), (256, 32, (20, 20))]
    assert all(layer["kwargs"]["n_heads"] == 8 for layer in layers)
    widths = {layer["head_dim"] for cfg in bench.detection_configs() for layer in bench.dattention_layers(cfg, 64)}
    assert {4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80} >= widths and {8, 16, 32} <= widths
    assert widths <= set(cpu_attention.HEAD_DIMS)


def test_configs_mode_times_reference_ours_and_sdpa(tmp_path):
    out = tmp_path / "layers.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--configs", "yolov5n_c3_dattn.yaml", "--imgsz", "64",
                           "--batch", "1", "--passes", "fwd", "--runs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["configs"] == ["yolov5n_c3_dattn.yaml"] and result["imgsz"] == 64
    (row,) = result["rows"]  # the n-scale P5 layer: 8 heads of 16 channels on a 2x2 map at 64 px
    assert (row["channels"], row["head_dim"], row["hw"], row["batch"]) == (128, 16, [2, 2], 1)
    expected = "ours (cpu_attention)" if cpu_attention.library() is not None else "sdpa"
    assert row["fast"]["kernel"] == expected and row["sdpa"]["kernel"] == "sdpa"
    assert row["reference"]["kernel"] == "explicit"
    assert len(row["paired_vs_sdpa"]) == len(row["paired_speedups"]) == 2
    assert row["speedup_vs_sdpa"] == statistics.median(row["paired_vs_sdpa"])
    attention = 4 * 1 * 4 * 4 * 128 / 1e9  # QKᵀ and AV: 4·B·M·N·C
    assert row["fast"]["attention_gflop"] == row["sdpa"]["attention_gflop"] == attention
    assert row["fast"]["attention_fraction_of_peak"] == attention / row["fast"]["median_s"] / row["fast"]["matmul_peak_gflops"]
    assert "model.8.m.0.attention" in proc.stdout and "yolov5n_c3_dattn" in proc.stdout


def test_configs_bad_values_are_one_line_exit_2():
    for args, message in ((["--configs", "nope.yaml"], "--configs nope.yaml: no such file or shipped config"),
                          (["--configs", "--imgsz", "100"], "--imgsz 100: must be a positive multiple of 32"),
                          (["--impl", "sdpa"], "--impl sdpa: only with --configs")):
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {message}")


def test_query_ratio_sweep_times_each_ratio_against_the_dense_layer(tmp_path):
    out = tmp_path / "sweep.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--query-ratios", "1", "0.25", "--scales", "s", "--levels",
                           "P4", "--passes", "fwd", "--runs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["scale"], r["level"], r["channels"], r["query_ratio"], r["queries"]) for r in rows] == [
        ("s", "P4", 128, 1.0, 1600), ("s", "P4", 128, 0.25, 400)]
    dense, sparse = rows
    assert dense["vs_dense"] == 1.0 and sparse["vs_dense"] > 0 and sparse["peak_mb"] > 0
    # the FLOP counter sees the attention of 400 queries instead of 1600: the layer's FLOPs drop by most of that
    assert sparse["gflop"] < 0.5 * dense["gflop"]
    assert "s     P4     128  40x40   1 fwd      |  0.25     400 |" in proc.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--query-ratios", "1.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "error: --query-ratios 1.5: each must be in (0, 1] (1: the dense layer)"]
