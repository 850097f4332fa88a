"""The compiled-kernel cache heals itself: a bad file at the cached kernel's name (truncated, garbage, empty,
another shared library, or one without its build record) is never loaded: it is rebuilt over with one warning
line, and the run goes on with a working kernel.

Each case runs in a child process: loading a truncated library dies of SIGBUS, which must fail the test, not
kill pytest.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yolov5_dattn.nn import cpu_attention

needs_kernel = pytest.mark.skipif(cpu_attention._compiler() is None, reason="no C++ compiler to build the kernel")

# loads the kernel from $YOLOV5_DATTN_CACHE and checks one attention call against PyTorch's; the module is loaded
# from its file (it needs only torch), which spares each child importing yolov5
LOAD_MODULE = f"""
import importlib.util, logging, torch
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
spec = importlib.util.spec_from_file_location("cpu_attention", {cpu_attention.__file__!r})
cpu_attention = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_attention)
"""
CHILD = LOAD_MODULE + """
lib = cpu_attention.library()
torch.manual_seed(0)
q, kv = torch.randn(2, 9, 32), torch.randn(2, 11, 32)
ours = cpu_attention.attention(q, kv, kv, 2)
split = lambda t: t.unflatten(-1, (2, -1)).transpose(1, 2)
ref = torch.nn.functional.scaled_dot_product_attention(split(q), split(kv), split(kv)).transpose(1, 2).flatten(2)
print("loaded", lib is not None, "error", float((ours - ref).abs().max()))
"""


def run_child(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOLOV5_DATTN_CACHE": str(cache)}
    env.pop("YOLOV5_DATTN_CPU_KERNEL", None)
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)


def warnings_of(proc: subprocess.CompletedProcess) -> list:
    return [line for line in proc.stderr.splitlines() if "yolov5-dattn" in line or "Traceback" in line]


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> Path:
    """A cache folder holding a fresh build (the kernel and its build record)."""
    cache = tmp_path_factory.mktemp("kernel-good")
    env = {**os.environ, "YOLOV5_DATTN_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", LOAD_MODULE + "cpu_attention.build()"], env=env, check=True, timeout=300)
    assert sorted(p.suffix for p in cache.iterdir()) == [".sha256", ".so"]
    return cache


def foreign_library(folder: Path) -> bytes:
    """A valid shared library that is not our kernel (none of its entry points)."""
    source = folder / "other.cpp"
    source.write_text('extern "C" int something_else(void) { return 7; }\n')
    out = folder / "other.so"
    subprocess.run([cpu_attention._compiler(), "-shared", "-fPIC", str(source), "-o", str(out)], check=True)
    return out.read_bytes()


@needs_kernel
@pytest.mark.parametrize("bad", ["truncated", "garbage", "empty", "another library", "no build record"])
def test_a_bad_cached_kernel_is_rebuilt_with_one_warning(bad, good_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    so = next(cache.glob("*.so"))
    good = so.read_bytes()
    if bad == "truncated":  # what the sweep found: the library cut short (an interrupted copy, a full disk)
        so.write_bytes(good[:len(good) // 2])
    elif bad == "garbage":
        so.write_bytes(os.urandom(len(good)))
    elif bad == "empty":
        so.write_bytes(b"")
    elif bad == "another library":
        so.write_bytes(foreign_library(tmp_path))
    else:  # a valid build from before build records existed
        next(cache.glob("*.sha256")).unlink()

    proc = run_child(cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = warnings_of(proc)
    assert len(lines) == 1 and "rebuilt it" in lines[0] and so.name in lines[0], proc.stderr[-2000:]
    assert "does not match its build record" in lines[0] or bad == "no build record"
    loaded, error = proc.stdout.split()[1], float(proc.stdout.split()[3])
    assert loaded == "True" and error < 1e-5
    assert cpu_attention.cache_problem(so) is None and so.stat().st_size > 0
    assert sorted(p.name for p in cache.iterdir()) == sorted([so.name, so.name + ".sha256"])  # no temp files

    again = run_child(cache)  # healed: the next run loads it without a word
    assert again.returncode == 0 and warnings_of(again) == [] and again.stdout.split()[1] == "True"


@needs_kernel
def test_a_good_cached_kernel_is_loaded_as_is(good_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    so = next(cache.glob("*.so"))
    stamp = so.stat().st_mtime_ns
    proc = run_child(cache)
    assert proc.returncode == 0 and warnings_of(proc) == [] and proc.stdout.split()[1] == "True"
    assert so.stat().st_mtime_ns == stamp  # not rebuilt


@needs_kernel
def test_cache_problem_names_what_is_wrong(good_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    so = next(cache.glob("*.so"))
    assert cpu_attention.cache_problem(so) is None
    size = so.stat().st_size
    with open(so, "r+b") as f:  # same size, one byte changed: only the checksum can tell
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert "does not match its build record" in cpu_attention.cache_problem(so)
    (cache / (so.name + ".sha256")).unlink()
    assert "has no build record" in cpu_attention.cache_problem(so)
