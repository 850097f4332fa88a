"""CoreML for YOLOv5 models with DAttention, converted with coremltools (the `edge` extra) and checked by its spec.

coremltools cannot run a model off macOS, so these tests convert and validate: `yolov5-dattn export --include
coreml` writes `best.mlpackage`, an fp32 ML program whose input, output, metadata and operations are what
`coreml_export` documents, with DAttention's sampling as Gather (no `resample`, CoreML's GridSample), at batch 1
(64×96) and batch 2 (96×64); `yolov5-dattn yolo export format=coreml` writes ultralytics' `.mlpackage` (its
`image` input, its metadata) the same way; the options it cannot honour are refused in one line (YOLOv5's:
tests/cli/test_deploy_edge.py).
"""
from collections import Counter
from pathlib import Path

import pytest
import torch

from calibrated_models import copy_into, export_copy
from conftest import run_yolo


def _program(package: Path):
    """(spec, operation-type counts of the ML program's main function) of a saved .mlpackage."""
    import coremltools as ct
    spec = ct.utils.load_spec(str(package))
    ops = Counter()

    def walk(block):
        for op in block.operations:
            ops[op.type] += 1
            for inner in op.blocks:
                walk(inner)
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        walk(block)
    return spec, ops


def test_yolov5_coreml_export_writes_a_valid_ml_program(calibrated_yolov5, tmp_path):
    checkpoint, pytorch = calibrated_yolov5
    for b, h, w in ((1, 64, 96), (2, 96, 64)):
        folder = export_copy(checkpoint, tmp_path / f"{b}x{h}x{w}", "--imgsz", h, w, "--batch-size", b,
                             "--include", "coreml")
        assert sorted(p.name for p in folder.iterdir()) == ["best.mlpackage", "best.pt"]  # no temp folder
        spec, ops = _program(folder / "best.mlpackage")
        assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8  # iOS 17
        (inp,), (out,) = spec.description.input, spec.description.output
        assert inp.name == "images" and list(inp.type.multiArrayType.shape) == [b, 3, h, w]
        anchors = 3 * sum((h // s) * (w // s) for s in (8, 16, 32))
        expected = list(pytorch(torch.zeros(b, 3, h, w)).shape)
        assert out.name == "output0" and list(out.type.multiArrayType.shape) == expected == [b, anchors, 8]
        meta = spec.description.metadata.userDefined
        assert meta["stride"] == "32" and meta["names"] == "{0: '0', 1: '1', 2: '2'}"
        assert meta["imgsz"] == f"[{h}, {w}]" and meta["batch"] == str(b)
        assert "resample" not in ops and ops["gather"] >= 1 and ops["floor"] >= 1, dict(ops)  # the Gather sampler
        assert ops["conv"] >= 40 and ops["softmax"] >= 1, ops  # the network, and the attention's softmax
        print(f"coreml {b}x{h}x{w}: {sum(ops.values())} ops, {ops['conv']} conv, {ops['gather']} gather")


# ---- ultralytics -------------------------------------------------------------------------------------------------
def test_ultralytics_coreml_export_writes_a_valid_ml_program(calibrated_ultralytics, tmp_path):
    checkpoint, pytorch = calibrated_ultralytics
    weights = copy_into(checkpoint, tmp_path)
    assert run_yolo("export", f"model={weights}", "format=coreml", "imgsz=[64,96]") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.mlpackage", "u.pt"]
    spec, ops = _program(tmp_path / "u.mlpackage")
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "image" and inp.type.WhichOneof("Type") == "imageType"  # as ultralytics' own export
    assert (inp.type.imageType.height, inp.type.imageType.width) == (64, 96)
    assert list(out.type.multiArrayType.shape) == list(pytorch(torch.zeros(1, 3, 64, 96)).shape)
    meta = spec.description.metadata.userDefined
    assert meta["stride"] == "32" and meta["task"] == "detect" and meta["imgsz"] == "[64, 96]"
    assert "resample" not in ops and ops["gather"] >= 1 and ops["floor"] >= 1, dict(ops)


@pytest.mark.parametrize("option,key", [("nms=True", "nms"), ("dynamic=True", "dynamic"), ("quantize=16", "quantize"),
                                        ("half=True", "quantize")])  # ultralytics reads half=True as quantize=16
def test_ultralytics_coreml_refuses_what_it_cannot_write(option, key, calibrated_ultralytics, tmp_path, capsys):
    weights = copy_into(calibrated_ultralytics[0], tmp_path)
    assert run_yolo("export", f"model={weights}", "format=coreml", "imgsz=64", option) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"format=coreml {key}=" in err[0] and f"remove {key}=" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt"]
