"""The compiled-kernel cache heals itself and loads only what this user built: a bad file at the cached kernel's
name (truncated, garbage, empty, another shared library, one without its build record, a symlink) is never
loaded: it is rebuilt over with one warning line, and the run goes on with a working kernel. A cache folder that
group or others can write, or that another user owns, is not used at all (one warning; a private build instead):
a library planted there with a matching record never runs its constructor. The cache is created private, and
processes starting together build once.

Each case runs in a child process: loading a truncated library dies of SIGBUS, which must fail the test, not
kill pytest. The children build at -O0 (a few seconds instead of twenty): the cache does not care how the kernel
was optimised.
"""
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from yolov5_dattn.nn import cpu_attention

needs_kernel = pytest.mark.skipif(cpu_attention._compiler() is None, reason="no C++ compiler to build the kernel")

# loads the kernel from $YOLOV5_DATTN_CACHE and checks one attention call against PyTorch's
LOAD_MODULE = """
import logging, torch
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
from yolov5_dattn.nn import cpu_attention
cpu_attention.FLAGS = [flag for flag in cpu_attention.FLAGS if flag != "-O3"] + ["-O0"]
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
    assert sorted(p.name.rsplit(".", 1)[-1] for p in cache.iterdir()) == ["lock", "sha256", "so"]
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
    assert sorted(p.name for p in cache.iterdir()) == sorted([".lock", so.name, so.name + ".sha256"])  # no temp files

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


def planted_library(folder: Path, marker: Path) -> Path:
    """A shared library whose constructor creates `marker`: what someone who can write the cache would plant."""
    source = folder / "planted.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void payload(void) {\n'
                      f'    FILE* f = fopen("{marker}", "w"); if (f) fclose(f);\n}}\n')
    out = folder / "planted.so"
    subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(out)], check=True)
    return out


def plant(cache: Path, library: Path) -> Path:
    """Put `library` at the cached kernel's name, with a build record that matches it. Returns that path."""
    so = next(cache.glob("*.so"))
    data = library.read_bytes()
    so.write_bytes(data)
    (cache / (so.name + ".sha256")).write_text(f"{len(data)} {hashlib.sha256(data).hexdigest()}\n")
    assert cpu_attention.cache_problem(so) is None  # the record cannot tell: it is the folder that must
    return so


@needs_kernel
def test_a_planted_library_runs_its_payload_when_loaded_directly(tmp_path):
    """The control: the planted library's constructor does create the marker when the library is loaded."""
    marker = tmp_path / "marker"
    library = planted_library(tmp_path, marker)
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(library)!r})"], check=True, timeout=60)
    assert marker.exists()


@needs_kernel
@pytest.mark.parametrize("folder", ["writable by all (0777)", "writable by the group (0770)",
                                    "owned by another user"])
def test_a_library_planted_in_a_cache_others_can_write_is_never_loaded(folder, good_cache, tmp_path):
    if folder == "owned by another user" and os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")  # the mode cases cover the same check
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    marker = tmp_path / "marker"
    so = plant(cache, planted_library(tmp_path, marker))
    if folder == "owned by another user":
        os.chown(cache, 65534, 65534)
    else:
        cache.chmod(0o777 if "all" in folder else 0o770)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}

    proc = run_child(cache)
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = warnings_of(proc)
    assert len(lines) == 1 and f"not using the CPU attention kernel cache {cache}" in lines[0], proc.stderr[-2000:]
    expected = "owned by uid 65534" if folder == "owned by another user" else "writable by"
    assert expected in lines[0] and "private folder" in lines[0]
    loaded, error = proc.stdout.split()[1], float(proc.stdout.split()[3])
    assert loaded == "True" and error < 1e-5  # our kernel, built privately
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # and nothing written there
    assert so.read_bytes() == before[so.name]


@needs_kernel
def test_a_symlink_at_the_kernels_name_is_rebuilt_over_not_followed(good_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    marker = tmp_path / "marker"
    so = plant(cache, planted_library(tmp_path, marker))
    planted = tmp_path / "elsewhere.so"
    so.rename(planted)
    so.symlink_to(planted)  # the record matches what the link points at

    proc = run_child(cache)
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = warnings_of(proc)
    assert len(lines) == 1 and "cannot be opened" in lines[0] and "rebuilt it" in lines[0], proc.stderr[-2000:]
    assert proc.stdout.split()[1] == "True" and not so.is_symlink() and cpu_attention.cache_problem(so) is None


@needs_kernel
def test_the_cache_is_created_private_whatever_the_umask(tmp_path):
    cache = tmp_path / "new" / "cache"
    env = {**os.environ, "YOLOV5_DATTN_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", "import os; os.umask(0)\n" + LOAD_MODULE + "cpu_attention.build()"],
                   env=env, check=True, timeout=300)
    modes = {p.name.rsplit(".", 1)[-1]: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert modes == {"lock": 0o600, "so": 0o700, "sha256": 0o600}


@needs_kernel
def test_two_processes_starting_together_build_once(tmp_path):
    """Two first uses at once (DDP ranks): one compiles under the cache's lock, the other waits and loads it."""
    log = tmp_path / "compiles.log"
    wrapper = tmp_path / "cxx"
    # the compiler, logging each compilation's output file (a second build would write to another temp folder)
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -o "*) echo "$*" | sed "s/.* -o //" >> {log} ;; esac\n'
                       f'exec {cpu_attention._compiler()} "$@"\n')
    wrapper.chmod(0o700)
    cache = tmp_path / "cache"
    env = {**os.environ, "YOLOV5_DATTN_CACHE": str(cache), "CXX": str(wrapper)}
    env.pop("YOLOV5_DATTN_CPU_KERNEL", None)
    children = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0 and out.split()[1] == "True" and float(out.split()[3]) < 1e-5, err[-2000:]
        assert [line for line in err.splitlines() if "yolov5-dattn" in line] == []
    assert len(set(log.read_text().split())) == 1  # one compilation (its output path), by one of the two
    assert sorted(p.name.rsplit(".", 1)[-1] for p in cache.iterdir()) == ["lock", "sha256", "so"]
