"""scripts/benchmark_deploy.py runs PyTorch, onnxruntime, OpenVINO, MNN, NCNN and LiteRT on the same model and prints one
row per model and runtime, then each runtime's DAttention ÷ stock ratio (timings are machine-dependent: only
their presence and consistency are checked)."""
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_deploy.py"
RUNTIMES = ("PyTorch", "onnxruntime", "OpenVINO", "MNN", "NCNN", "LiteRT")


def test_table_has_every_runtime_with_ratios_and_matching_outputs():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--imgsz", "64", "--runs", "2", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if re.match(r"\| yolov5n", line)]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (model, runtime) for model in ("yolov5n_c3_dattn", "yolov5n") for runtime in RUNTIMES]
    for model, runtime, ms, ratio, diff in rows:
        assert float(ms) > 0 and float(diff) < 1e-3, (model, runtime, diff)
    torch_ms = {r[0].strip(): float(r[2]) for r in rows if r[1].strip() == "PyTorch"}
    for model, runtime, ms, ratio, _ in rows:  # ratio = this runtime's median / PyTorch's (both rounded as printed)
        assert abs(float(ratio) - float(ms) / torch_ms[model.strip()]) < 0.006 + 0.03 * float(ratio), (model, runtime)
    ms = {(r[0].strip(), r[1].strip()): float(r[2]) for r in rows}
    ratios = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in proc.stdout.splitlines()
              if re.match(r"\| (PyTorch|onnxruntime|OpenVINO|MNN|NCNN|LiteRT) \|", line)}
    assert sorted(ratios) == sorted(RUNTIMES)
    for runtime, ratio in ratios.items():  # the DAttention model's median over the stock one's, in one runtime
        expected = ms["yolov5n_c3_dattn", runtime] / ms["yolov5n", runtime]
        assert abs(ratio - expected) < 0.006 + 0.05 * expected, (runtime, ratio, expected)
