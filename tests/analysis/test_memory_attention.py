"""scripts/memory_attention.py: one fresh process per case, the kernel it asked for is the one that ran, the tensors
saved for backward are counted (forward alone saves none), and a --root that is not a checkout is refused in one
line. Its megabytes are machine-dependent: only their presence and consistency are checked."""
import json
import subprocess
import sys
from pathlib import Path

from yolov5_dattn.nn import cpu_attention

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "memory_attention.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_small_layer_table_and_json(tmp_path):
    out = tmp_path / "mem.json"
    proc = _run("--channels", 32, "--side", 16, "--heads", 4, "--groups", 2, "--allocators", "mmap", "--json", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {(r["kernel"], r["pass"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {(k, p) for k in ("ours", "sdpa") for p in ("fwd", "fwd+bwd")}
    ours = "ours" if cpu_attention.library() is not None else "sdpa"
    for (kernel, pass_), row in rows.items():
        assert "error" not in row, row  # the measuring process died: its last stderr line
        assert row["kernel_ran"] == [ours if kernel == "ours" else "sdpa"], row
        # a high-water mark minus the resident size read just before: pages freed between the two reads can
        # make it a few pages negative, never more
        assert row["first_mb"] > -1 and row["steady_mb"] > -1
        if pass_ == "fwd":
            assert row["saved_mb"] == row["grads_mb"] == 0
        else:
            # (1, 32, 16, 16) fp32 maps are 32 KiB: the saved activations are several of them, the gradients the
            # input's and the parameters'
            assert 0.1 < row["saved_mb"] < 2 and row["grads_mb"] > 32 / 1024
            assert row["top_saved"][0][0] >= row["top_saved"][-1][0]
    assert "C=32, 16x16, 4 heads, 2 groups" in proc.stdout


def test_a_root_that_is_not_a_checkout_is_refused(tmp_path):
    proc = _run("--root", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --root {tmp_path}: no yolov5_dattn/nn/dattention.py there: "
                                                f"pass a checkout of this project"]
