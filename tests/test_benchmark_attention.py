"""scripts/benchmark_attention.py measures (its numbers are machine-dependent, so only their presence and
consistency are checked here) and refuses bad flags with one line."""
import json
import subprocess
import sys
from pathlib import Path

from yolov5_dattn import cpu_attention

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_attention.py"


def test_one_case_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--levels", "P5", "--batch", "1", "--passes", "fwd",
                           "--runs", "2", "--repeats", "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    ref, fast = row["reference"], row["fast"]
    assert result["matmul_peak_gflops"]["fp32"] > 1
    assert row["speedup"] == ref["median_s"] / fast["median_s"] and fast["runs"] == ref["runs"] == 2
    assert fast["repeats"] == ref["repeats"] == 2  # two fresh timing processes each, alternating
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
