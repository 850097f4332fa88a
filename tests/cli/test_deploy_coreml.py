"""CoreML for YOLOv5 models with DAttention, converted with coremltools (the `edge` extra) and checked by its spec.

coremltools cannot run a model off macOS, so these tests convert and validate: `yolov5-dattn export --include
coreml` writes `best.mlpackage`, an fp32 ML program whose input, output, metadata and operations are what
`coreml_export` documents, with DAttention's sampling as Gather (no `resample`, CoreML's GridSample), at batch 1
(64×96) and batch 2 (96×64); the flags it cannot honour are refused in one line. ultralytics' own CoreML export is
refused where coremltools cannot convert its trace (tests/cli/test_deploy_edge.py).
"""
from collections import Counter
from pathlib import Path

import pytest
import torch

from calibrated_models import copy_into, export_copy
from conftest import run_task


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


@pytest.mark.parametrize("flag", ["--dynamic", "--int8"])
def test_yolov5_coreml_refuses_what_it_cannot_write(flag, calibrated_yolov5, tmp_path, capsys):
    weights = copy_into(calibrated_yolov5[0], tmp_path)
    assert run_task("export", "--weights", weights, "--include", "coreml", flag) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --include coreml {flag}: ") and "remove " + flag in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
