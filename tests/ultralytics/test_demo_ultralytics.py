"""`yolov5-dattn demo --host ultralytics`: the demo's story (data, train, val, predict on images and a video)
through `yolov5-dattn yolo`, with ultralytics' run folders under --out; the default host stays yolov5."""
import csv

import pytest

from conftest import run_script
from yolov5_dattn.cli import demo


@pytest.fixture(scope="module")
def u_demo(tmp_path_factory):
    """The smallest ultralytics demo (8 train / 4 val images at the default imgsz 160, 1 epoch, no compare), run
    as `python scripts/demo.py` from an empty folder with sockets blocked; returns (process, out, net log)."""
    cwd = tmp_path_factory.mktemp("u_demo")
    log = cwd.parent / (cwd.name + "-net.log")
    result = run_script("demo.py", "--host", "ultralytics", "--out", "demo", "--n-train", "8", "--n-val", "4",
                        "--epochs", "1", "--batch-size", "4", "--no-compare", "--min-map50", "0", cwd=cwd, log=log)
    return result, cwd / "demo", log


@pytest.mark.slow  # the demo fixture runs five steps, each in a fresh Python
def test_runs_every_step_and_writes_ultralytics_run_folders(u_demo):
    result, out, log = u_demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    detect = out / "runs" / "detect"
    train = detect / "train"
    assert (train / "weights" / "best.pt").stat().st_size > 1_000_000
    assert (train / "weights" / "last.pt").is_file()
    with open(train / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["epoch"])) for r in rows] == [1]  # one row per epoch, the 1 epoch asked for
    assert "metrics/mAP50(B)" in rows[0]
    assert (detect / "val" / "confusion_matrix.png").stat().st_size > 0
    assert sorted(p.stem for p in (detect / "predict").glob("*.jpg")) == [f"val_{i:05d}" for i in range(4)]
    videos = list((detect / "predict-video").glob("shapes.*"))
    assert len(videos) == 1 and videos[0].stat().st_size > 10_000
    assert not (out / "runs" / "train").exists()  # YOLOv5's folders are not made for this host
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo"]  # nothing written beside --out
    assert not log.exists() or log.read_text() == ""  # no network attempt in any step


@pytest.mark.slow  # the demo fixture runs five steps, each in a fresh Python
def test_summary_names_the_model_the_map_and_the_files(u_demo):
    result, out, _ = u_demo
    summary = result.stdout[result.stdout.index("=== demo finished"):]
    assert "host ultralytics, yolo11n-c3k2-dattn" in summary
    for step in ("yolo train model=", "yolo val model=", "yolo predict model="):
        assert f"yolov5-dattn {step}" in result.stdout
    assert "model=" + str(demo.U_CFG) in result.stdout and "imgsz=160" in result.stdout
    assert str(out.resolve() / "runs" / "detect" / "train" / "weights" / "best.pt") in summary
    assert "mAP50 " in summary and "mAP50-95" in summary
    # 1 epoch cannot reach the target, and --min-map50 0 turned the check off: a note, no error line
    assert "below the 0.5 target" in summary and "error:" not in result.stderr


def test_defaults_per_host():
    yolov5, ultralytics = demo.parse_args([]), demo.parse_args(["--host", "ultralytics"])
    assert (yolov5.host, yolov5.imgsz, yolov5.epochs, yolov5.min_map50) == ("yolov5", 64, 12, None)
    assert (ultralytics.imgsz, ultralytics.epochs) == (160, 10)
    assert demo.parse_args(["--host", "ultralytics", "--imgsz", "96", "--epochs", "3"]).imgsz == 96


def test_target_check_message():
    assert demo.check_target(0.62, 0.5) is None and demo.check_target(0.01, None) is None
    assert demo.check_target(0.01, 0.0) is None
    message = demo.check_target(0.123, 0.5)
    assert message.startswith("error: demo: mAP50 0.123 is below the target 0.5") and "--epochs" in message


def test_val_row_of_ultralytics_output():
    output = ("\x1b[K   Class  Images  Instances  Box(P  R  mAP50  mAP50-95): 100% 2/2 1.8it/s\r\n"
              "                   all         64        152      0.948      0.887      0.949      0.581\n"
              "                circle         34         44      0.9        0.8        0.95       0.6\n")
    assert demo.parse_val_row(output) == (0.949, 0.581)
    assert demo.parse_map50(output) == 0.949
    # an untrained model: YOLOv5 prints the small values in e-notation
    assert demo.parse_val_row("   all   8   16   0.000473   0.0417   0.00031   3.1e-05\n") == (0.00031, 3.1e-05)
    with pytest.raises(ValueError, match="no 'all' row"):
        demo.parse_val_row("nothing here")


@pytest.mark.parametrize("flags, named", [(["--min-map50", "1.5"], "--min-map50 1.5"),
                                          (["--imgsz", "150"], "--imgsz 150")])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, capsys, flags, named):
    rc = demo.main(["--host", "ultralytics", "--out", str(tmp_path / "demo"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {named}") and err.count("\n") == 1
    assert not (tmp_path / "demo").exists()
