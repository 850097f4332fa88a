"""Ablation presets: a training protocol (epochs, image size, seeds, train flags) under which stock YOLOv5's
seed-to-seed spread is small enough for a paired comparison to say something (measured in docs/accuracy.md).

`yolov5-dattn ablate --preset demo --data D --cfg ...` expands to the preset's flags; any of them given on the
command line wins over the preset's value. The preset does not make the data: each names the
`make-demo-data` command whose data it was measured on.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ("Preset", "PRESETS", "flag_names", "expand")


@dataclass(frozen=True)
class Preset:
    """One protocol: ablate's own settings plus the train flags every run gets."""
    name: str
    epochs: int
    imgsz: int
    seeds: Tuple[int, ...]
    train_args: Tuple[str, ...]  # train.py flags in `--flag value` form
    data_command: str  # the make-demo-data command of the data it was measured on
    summary: str  # one line for --help: what it is for and what it costs


# the train flags both presets were measured with (their stock spreads: docs/accuracy.md)
_TRAIN_ARGS = ("--hyp", "hyp.ablate.yaml", "--optimizer", "AdamW", "--batch-size", "8", "--workers", "1")

PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset("demo", epochs=12, imgsz=160, seeds=(0, 1, 2), train_args=_TRAIN_ARGS,
           data_command="yolov5-dattn make-demo-data --root demo/shapes --n-train 512 --n-val 128 --imgsz 160 "
                        "--no-video",
           summary="the demo shapes (512 train / 128 val at 160 px): 12 epochs, AdamW, batch 8, hyp.ablate.yaml, "
                   "seeds 0 1 2"),
    # the dense shapes still climb at epoch 12 (stock's spread there is 0.12 mAP50): 36 epochs
    Preset("dense", epochs=36, imgsz=160, seeds=(0, 1, 2), train_args=_TRAIN_ARGS,
           data_command="yolov5-dattn make-demo-data --root demo/dense --preset dense --n-train 512 --n-val 128 "
                        "--imgsz 160 --no-video",
           summary="small, dense shapes on clutter (make-demo-data --preset dense, 512 train / 128 val at 160 px): "
                   "36 epochs, AdamW, batch 8, hyp.ablate.yaml, seeds 0 1 2"),
)}


def flag_names(train_args: Sequence[str]) -> List[str]:
    """The `--flag` names in a train argument list ('--batch-size=8' and '--batch-size 8' both give
    '--batch-size'); values are skipped."""
    return [a.split("=", 1)[0] for a in train_args if a.startswith("--")]


def expand(preset: Preset, epochs: Optional[int], imgsz: Optional[int], seeds: Optional[Sequence[int]],
           train_args: Sequence[str]) -> Tuple[int, int, List[int], List[str]]:
    """(epochs, imgsz, seeds, train_args) of a preset with the user's own values winning.

    Args: the preset; epochs, imgsz, seeds as given on the command line (None: not given); train_args: the train
    flags given. Returns the settings to plan with: the user's train flags first, then each preset flag (with its
    value) the user did not give.
    """
    given = set(flag_names(train_args))
    extra: List[str] = []
    args = list(preset.train_args)
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg not in given:
            extra.append(arg)
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                extra.append(args[i + 1])
    return (preset.epochs if epochs is None else epochs, preset.imgsz if imgsz is None else imgsz,
            list(preset.seeds) if seeds is None else list(seeds), list(train_args) + extra)
