"""A dataset's label cache (`labels/*.cache`) never runs code, on either host.

Both hosts read the cache with `np.load(path, allow_pickle=True)`: a `.cache` planted beside a dataset someone hands
over would run its pickle's payload when train / val builds the dataset. Under our policy it is read with
`yolov5_dattn.core.safe_cache` (numpy's array classes only). Each hostile case plants a cache whose unpickling
creates a marker file (`os.system`), under the name the host reads, and builds the host's dataset in a fresh
process: the marker is absent once the process has exited, the dataset loads (the host rebuilt the cache) and one
warning names the file. The control shows that a plain `np.load(allow_pickle=True).item()` runs the payload; the
cache each host then writes loads through the safe loader with the same contents (the loader is no blanket refusal).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import NETGUARD, REPO
from yolov5_dattn.core import safe_cache
from yolov5_dattn.demo_data import make_demo_data

NAMES = {0: "circle", 1: "square", 2: "triangle"}


class _Reduce:
    """Unpickling this calls `fn(*args)`."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def plant(cache: Path, marker: Path) -> Path:
    """A label cache at `cache`, shaped like a real one (a dict saved by np.save), whose full unpickling creates
    `marker`."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:
        np.save(f, {"labels": [], "hash": "", "version": "0", "x": _Reduce(os.system, f"touch {marker}")},
                allow_pickle=True)
    return cache


def python(code: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """`prelude` then `code` (dedented) in a fresh Python under the network guard."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(REPO)]),
           "NETGUARD_LOG": str(cwd / "net.log"), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def said(result: subprocess.CompletedProcess) -> list:
    """The words of each line the snippet printed with a leading '> ' (the hosts print lines of their own)."""
    return [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("> ")]


def warnings_naming(stderr: str, cache: Path) -> list:
    return [line for line in stderr.splitlines() if str(cache) in line and "refused" in line]


# the rebuilt cache, read by the safe loader and by numpy (the file is the host's own now): same contents
SAME = """
import numpy as np
from yolov5_dattn.core.safe_cache import load_label_cache

def same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b

def identical(path):
    mine = load_label_cache(path)
    return len(mine) > 3 and same(mine, np.load(path, allow_pickle=True).item())
"""


@pytest.fixture
def data(tmp_path) -> dict:
    """2 train / 2 val images of 64 px, detection and segmentation labels, in a folder of this test's own."""
    return make_demo_data(tmp_path / "data", n_train=2, n_val=2, imgsz=64, video=False)


def test_control_plain_np_load_runs_the_payload(tmp_path):
    marker = tmp_path / "ran"
    cache = plant(tmp_path / "labels" / "val.cache", marker)
    result = python(f"import numpy as np\nnp.load({str(cache)!r}, allow_pickle=True).item()\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists()


def test_the_safe_loader_refuses_payloads_in_any_wrapping(tmp_path):
    """An .npy label cache, the same read from an open file, and a bare pickle (np.load would unpickle it in full)
    are each refused with one warning, and nothing runs."""
    marker = tmp_path / "ran"
    npy = plant(tmp_path / "a.cache", marker)
    bare = tmp_path / "b.cache"
    bare.write_bytes(__import__("pickle").dumps({"x": _Reduce(os.system, f"touch {marker}")}))
    result = python(f"""
        from yolov5_dattn.core import safe_cache
        for read in (lambda: safe_cache.load_label_cache({str(npy)!r}),
                     lambda: safe_cache.load_cache_array(open({str(npy)!r}, 'rb')),
                     lambda: safe_cache.load_label_cache({str(bare)!r})):
            try:
                read()
            except safe_cache.CacheRefused:
                print('refused')
        """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["refused"] * 3
    assert len(warnings_naming(result.stderr, npy)) == 2 and len(warnings_naming(result.stderr, bare)) == 1
    assert "posix.system" in result.stderr or "os.system" in result.stderr
    assert not marker.exists()  # the process has exited


def test_ultralytics_rebuilds_a_planted_label_cache(data, tmp_path):
    marker = tmp_path / "ran"
    caches = [plant(data["root"] / kind / "labels" / "val.cache", marker) for kind in ("det", "seg")]
    result = python(f"""
        import yolov5_dattn.hosts.ultralytics as host
        host.use_policy()
        from ultralytics.data.dataset import YOLODataset
        for task, kind in (("detect", "det"), ("segment", "seg")):
            dataset = YOLODataset(img_path={str(data["root"])!r} + f"/{{kind}}/images/val", imgsz=64, augment=False,
                                  data={{"names": {NAMES!r}, "channels": 3}}, task=task)
            path = {str(data["root"])!r} + f"/{{kind}}/labels/val.cache"
            print(">", len(dataset.labels), sum(len(lb["cls"]) for lb in dataset.labels), identical(path))
        """, tmp_path, prelude=SAME)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()  # the process has exited
    for cache in caches:
        assert len(warnings_naming(result.stderr, cache)) == 1, result.stderr[-3000:]
    reports = said(result)
    assert [r[0] for r in reports] == ["2", "2"] and all(int(r[1]) >= 2 for r in reports), result.stdout[-2000:]
    assert [r[2] for r in reports] == ["True", "True"]  # the host's own cache loads safely, contents unchanged
    assert not (tmp_path / "net.log").exists() or not (tmp_path / "net.log").read_text().strip()


def test_yolov5_rebuilds_a_planted_label_cache(data, tmp_path):
    """The detection dataset and the segmentation one (whose __init__ reads the cache through the former's)."""
    marker = tmp_path / "ran"
    caches = [plant(data["root"] / kind / "labels" / "val.cache", marker) for kind in ("det", "seg")]
    result = python(f"""
        import yolov5_dattn
        from yolov5.utils.dataloaders import LoadImagesAndLabels
        from yolov5.utils.segment.dataloaders import LoadImagesAndLabelsAndMasks
        for Dataset, kind in ((LoadImagesAndLabels, "det"), (LoadImagesAndLabelsAndMasks, "seg")):
            dataset = Dataset({str(data["root"])!r} + f"/{{kind}}/images/val", img_size=64)
            path = {str(data["root"])!r} + f"/{{kind}}/labels/val.cache"
            print(">", len(dataset), sum(len(lb) for lb in dataset.labels), identical(path))
        """, tmp_path, prelude=SAME)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()  # the process has exited
    for cache in caches:
        assert len(warnings_naming(result.stderr, cache)) == 1, result.stderr[-3000:]
    reports = said(result)
    assert [r[0] for r in reports] == ["2", "2"] and all(int(r[1]) >= 2 for r in reports), result.stdout[-2000:]
    assert [r[2] for r in reports] == ["True", "True"]


def test_yolov5_loads_without_pickle_go_to_numpy(tmp_path):
    """The dataloader's own np.load keeps numpy's behaviour for the .npy image cache (no pickle involved)."""
    from yolov5.utils import dataloaders
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.save(tmp_path / "im.npy", image, allow_pickle=False)
    assert dataloaders.np.load is not np.load and dataloaders.np.ndarray is np.ndarray
    loaded = dataloaders.np.load(tmp_path / "im.npy")
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, image)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([None, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        dataloaders.np.load(objects)  # numpy's own refusal, as before
    assert dataloaders.np.load(objects, allow_pickle=True).tolist() == [None, "a"]


def test_a_numeric_npy_reads_as_numpy_reads_it(tmp_path):
    path = tmp_path / "n.cache"
    np.save(path.with_suffix(".npy"), np.eye(3, dtype=np.float32))
    path.with_suffix(".npy").rename(path)
    got = safe_cache.load_cache_array(path)
    assert got.dtype == np.float32 and np.array_equal(got, np.eye(3))
