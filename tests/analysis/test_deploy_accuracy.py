"""scripts/deploy_accuracy.py reads mAP50 and mAP50-95 from both hosts' val output (the first "all" row)."""
from conftest import load_script


def test_map_of_reads_the_all_row_of_each_hosts_val():
    map_of = load_script("deploy_accuracy.py").map_of
    yolov5 = ("                 Class     Images  Instances          P          R      mAP50   mAP50-95\n"
              "                   all         64        154      0.958      0.932      0.987      0.572\n"
              "                circle         64         51      0.97       0.94       0.99       0.6\n")
    ultralytics = ("                 Class     Images  Instances      Box(P          R      mAP50  mAP50-95)\n"
                   "                   all         64        154          1      0.089      0.209      0.146\n")
    assert map_of(yolov5) == (0.987, 0.572)
    assert map_of(ultralytics) == (0.209, 0.146)
    assert map_of("error: --weights x.pt not found\n") is None


def test_each_host_has_a_torchscript_reference_and_the_unloadable_rows_are_marked():
    script = load_script("deploy_accuracy.py")
    labels = [row[0] for row in script.YOLOV5_ROWS + script.ULTRALYTICS_ROWS]
    assert sum(label.startswith("TorchScript") for label in labels) == 2  # each host's reference
    # DetectMultiBackend cannot load these two: YOLOv5's val loop runs them with the runtime as the model
    assert [row[3] for row in script.YOLOV5_ROWS if row[0].startswith(("NCNN", "MNN"))] == [False, False]
    args = script.parse_args(["--data", "d.yaml", "--workdir", "w", "--rows", "MNN"])
    assert args.imgsz == 128 and args.rows == ["MNN"] and args.yolov5 is None
