"""`make-real-data` / scripts/convert_deepforest.py: a package's VOC-labelled images become a tiled YOLO dataset.

The archives here are built by the tests in the layout of the deepforest wheel and sdist (no download)."""
import io
import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import load_script
import yolov5_dattn
from yolov5_dattn.errors import UserError
from yolov5_dattn.real_data import convert, tile_starts

REPO = Path(yolov5_dattn.__file__).resolve().parents[1]  # the checkout: scripts/ sits beside the package

# image "a": 200 wide, 160 high; with tile 64, overlap 0.5 and val_fraction 0.25 its rows 0-119 are train
# (tile tops 0, 32, 56; lefts 0, 32, 64, 96, 128, 136: 18 tiles), rows 120-159 val (one 40-row band, lefts
# 0, 64, 128, 136: 4 tiles)
A_BOXES = [("Tree", 70, 10, 90, 40),     # inside train tile (y0 0, x0 64) and others
           ("Dead", 150, 110, 170, 140),  # across the band cut: a third in train, two thirds in val
           ("Alive", 2, 140, 30, 158)]    # in the val band only
# image "b": 96 x 80, its val band (20 rows) is under half a tile, so all of it is train: tops 0, 16; lefts 0, 32
B_BOXES = [("Tree", 10, 10, 40, 30)]


def _voc(filename, w, h, boxes):
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                      f"<ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1 in boxes)
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>").encode()


def _images():
    rng = np.random.default_rng(0)
    return {"a": rng.integers(0, 256, (160, 200, 3), np.uint8), "b": rng.integers(0, 256, (80, 96, 3), np.uint8)}


def _members(images, drop_image=False):
    """{path inside the wheel: bytes} in the deepforest layout (b's image as a TIFF, as OSBS_029 ships)."""
    a, b = images["a"], images["b"]
    files = {"deepforest-2.1.0.dist-info/METADATA": b"Metadata-Version: 2.4\nName: deepforest\nVersion: 2.1.0\n",
             "deepforest-2.1.0.dist-info/licenses/LICENSE": b"MIT License\n\nCopyright (c) test\n",
             "deepforest/__init__.py": b"",
             "deepforest/data/a.xml": _voc("a.png", 200, 160, A_BOXES),
             "deepforest/data/b.xml": _voc("b.tif", 96, 80, B_BOXES),
             "deepforest/data/b.tif": cv2.imencode(".tif", b)[1].tobytes(),
             "deepforest/data/notes.csv": b"image_path,xmin\n"}
    if not drop_image:
        files["deepforest/data/a.png"] = cv2.imencode(".png", a)[1].tobytes()
    return files


def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _sdist(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            name = name.replace("deepforest-2.1.0.dist-info/licenses/", "deepforest-2.1.0/").replace(
                "deepforest-2.1.0.dist-info/METADATA", "deepforest-2.1.0/PKG-INFO")
            if name.startswith("deepforest/"):
                name = "deepforest-2.1.0/src/" + name
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _labels(path):
    return [list(map(float, line.split())) for line in path.read_text().splitlines()]


SETTINGS = dict(tile=64, overlap=0.5, val_fraction=0.25, min_visible=0.25)


def test_tiles_labels_split_and_yaml(tmp_path):
    images = _images()
    root = tmp_path / "out"
    record = convert(_wheel(tmp_path / "deepforest-2.1.0-py3-none-any.whl", _members(images)), root, **SETTINGS)

    assert tile_starts(120, 64, 32) == [0, 32, 56] and tile_starts(40, 64, 64) == [0]
    assert record["counts"]["train"]["tiles"] == 18 + 4 and record["counts"]["val"]["tiles"] == 4
    assert sorted(p.name for p in (root / "images" / "val").iterdir()) == [
        "a_y00120_x00000.png", "a_y00120_x00064.png", "a_y00120_x00128.png", "a_y00120_x00136.png"]
    assert len(list((root / "labels" / "train").glob("*.txt"))) == 22
    assert record["version"] == "2.1.0" and record["licence"] == "MIT"
    assert (root / "LICENSE.deepforest").read_text().startswith("MIT License")

    # a box wholly inside a tile: (70, 10, 90, 40) in the tile at x 64..128, y 0..64 -> (6, 10, 26, 40)
    np.testing.assert_allclose(_labels(root / "labels" / "train" / "a_y00000_x00064.txt"),
                               [[0, 16 / 64, 25 / 64, 20 / 64, 30 / 64]], atol=1e-6)
    # the box across the cut is in both bands, clipped: train tile y 56..120 holds y 110..120 of it,
    # val tile y 120..160 (40 rows) holds y 120..140; x 150..170 lies in tiles from 136 (14..34 of 64)
    np.testing.assert_allclose(_labels(root / "labels" / "train" / "a_y00056_x00136.txt"),
                               [[0, 24 / 64, 59 / 64, 20 / 64, 10 / 64]], atol=1e-6)
    val = _labels(root / "labels" / "val" / "a_y00120_x00000.txt")
    np.testing.assert_allclose(val, [[0, 16 / 64, 29 / 40, 28 / 64, 18 / 40]], atol=1e-6)
    np.testing.assert_allclose(_labels(root / "labels" / "val" / "a_y00120_x00136.txt"),
                               [[0, 24 / 64, 10 / 40, 20 / 64, 20 / 40]], atol=1e-6)
    # under a quarter visible: the tile at y 56..120, x 96..160 holds half its columns and a third of its rows
    # (17 % of its area), so it does not label it; the tile at x 128 holds all columns (33 %) and does
    assert _labels(root / "labels" / "train" / "a_y00056_x00096.txt") == []
    assert len(_labels(root / "labels" / "train" / "a_y00056_x00128.txt")) == 1
    # the TIFF image, all train: its box sits in the tiles at y 0 (clipped to x 32..96 it keeps 8 of 30 columns,
    # 27 % >= 25 %)
    np.testing.assert_allclose(_labels(root / "labels" / "train" / "b_y00000_x00000.txt"),
                               [[0, 25 / 64, 20 / 64, 30 / 64, 20 / 64]], atol=1e-6)
    np.testing.assert_allclose(_labels(root / "labels" / "train" / "b_y00000_x00032.txt"),
                               [[0, 4 / 64, 20 / 64, 8 / 64, 20 / 64]], atol=1e-6)
    # the tiles are the image's pixels, losslessly
    assert np.array_equal(cv2.imread(str(root / "images" / "val" / "a_y00120_x00136.png")), images["a"][120:, 136:])
    assert np.array_equal(cv2.imread(str(root / "images" / "train" / "b_y00016_x00032.png")), images["b"][16:, 32:])

    data = yaml.safe_load((root / "deepforest.yaml").read_text())
    assert data == {"path": str(root.resolve()), "train": "images/train", "val": "images/val", "names": {0: "tree"}}
    assert json.loads((root / "source.json").read_text())["counts"] == record["counts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deepforest-2.1.0-py3-none-any.whl", "out"]


def test_deterministic_and_the_sdist_gives_the_same_tiles(tmp_path):
    members = _members(_images())
    convert(_wheel(tmp_path / "w.whl", members), tmp_path / "w", **SETTINGS)
    convert(_sdist(tmp_path / "s.tar.gz", members), tmp_path / "s", **SETTINGS)
    convert(_wheel(tmp_path / "w.whl", members), tmp_path / "w", **SETTINGS)  # ours: replaced as a whole

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.suffix in (".png", ".txt")}
    w, s = files(tmp_path / "w"), files(tmp_path / "s")
    assert len(w) == 2 * 26 and w == s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "s.tar.gz", "w", "w.whl"]  # no temp folder left


def test_cli_converts_and_refuses_bad_input(tmp_path, capsys):
    cli = load_script("convert_deepforest.py")
    images = _images()
    wheel = _wheel(tmp_path / "good.whl", _members(images))
    assert cli.main([str(wheel), "--root", str(tmp_path / "ok"), "--tile", "64", "--val-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "deepforest 2.1.0 (MIT licence): 2 images, 4 boxes -> 64-px tiles: train 22 tiles" in out

    broken = _wheel(tmp_path / "broken.whl", _members(images, drop_image=True))
    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    cases = [
        ([str(tmp_path / "missing.whl")], "missing.whl: no such file"),
        ([str(broken)], "broken.whl:deepforest/data/a.xml names image a.png, which the archive lacks"),
        ([str(text)], "notes.txt: not a wheel (zip) or an sdist (tar.gz)"),
        ([str(wheel), "--tile", "16"], "--tile 16 is out of range: use a value >= 32"),
        ([], "give the package's wheel or sdist as ARCHIVE, or --download"),
    ]
    for argv, message in cases:
        assert cli.main([*argv, "--root", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "refused").exists()
    assert cli.main([str(wheel), "--root", str(foreign)]) == 2
    assert capsys.readouterr().err == (f"error: --root {foreign} exists and holds files this converter did not "
                                       f"write: choose an empty or new folder\n")
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temp folder


def test_a_voc_label_the_source_does_not_map_is_refused(tmp_path):
    members = _members(_images())
    members["deepforest/data/b.xml"] = _voc("b.tif", 96, 80, [("Car", 1, 1, 9, 9)])
    with pytest.raises(UserError, match="label 'Car' is not one of Tree, Alive, Dead"):
        convert(_wheel(tmp_path / "x.whl", members), tmp_path / "x", **SETTINGS)
    assert not (tmp_path / "x").exists()
