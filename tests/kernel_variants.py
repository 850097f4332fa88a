"""The CPU kernel's test builds besides the native one, and building them in the background.

`no-avx512` is the code that laptops and AMD CPUs before Zen 4 run (its own exp2 and reductions); `no-openmp` is
a compiler without OpenMP (Python threads share out the pairs). Each is a separate -O3 compile on one core.
`start(names)` begins those compiles in child processes when collection ends, so they overlap with the tests
before tests/nn instead of adding to the suite's time; the fixture that uses a variant then finds it in the
variant's cache, or waits on the cache's lock until the child has written it (kernel_cache builds once for
processes that ask together). What the tests run is the same build either way.

The caches live in one folder per test run, named by `$YOLOV5_DATTN_TEST_KERNELS`: `prepare()` makes it in the
process that starts the run (pytest-xdist's workers inherit the variable), so workers share each variant's build.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from yolov5_dattn.nn import cpu_attention

__all__ = ("NAMES", "ROOT_ENV", "settings", "prepare", "cache_for", "start", "stop")

NAMES = ("no-avx512", "no-openmp")
ROOT_ENV = "YOLOV5_DATTN_TEST_KERNELS"
_owned: Optional[Path] = None  # the folder this process made (and removes at the end)
_children: List[subprocess.Popen] = []

# a child process: apply the variant's module settings, then build into $YOLOV5_DATTN_CACHE
_BUILD = ("import json, sys\nfrom yolov5_dattn.nn import cpu_attention\n"
          "for name, value in json.loads(sys.argv[1]).items():\n    setattr(cpu_attention, name, value)\n"
          "cpu_attention.build()\n")


def settings(name: str) -> Dict[str, list]:
    """The `cpu_attention` module attributes that make variant `name` (set them with monkeypatch)."""
    if name == "no-avx512":
        return {"FLAGS": cpu_attention.FLAGS + ["-mno-avx512f"]}
    if name == "no-openmp":
        return {"OPENMP": []}
    raise KeyError(name)


def prepare() -> None:
    """Make this run's folder for the variants' caches, unless a parent process made it (an xdist worker)."""
    global _owned
    if not os.environ.get(ROOT_ENV):
        _owned = Path(tempfile.mkdtemp(prefix="yolov5-dattn-kernels-"))
        os.environ[ROOT_ENV] = str(_owned)


def cache_for(name: str) -> Path:
    """Variant `name`'s own kernel cache folder (private to this test run)."""
    prepare()
    return Path(os.environ[ROOT_ENV]) / name


def start(names: Iterable[str]) -> None:
    """Begin building the named variants in background processes (no-op without a C++ compiler)."""
    if cpu_attention._compiler() is None:
        return
    for name in names:
        env = {**os.environ, "YOLOV5_DATTN_CACHE": str(cache_for(name))}
        _children.append(subprocess.Popen([sys.executable, "-c", _BUILD, json.dumps(settings(name))], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def stop() -> None:
    """End any build this process started that is still running; remove the caches' folder if this process
    made it."""
    global _owned
    for child in _children:
        if child.poll() is None:
            child.kill()
        child.wait()
    _children.clear()
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        os.environ.pop(ROOT_ENV, None)
        _owned = None
