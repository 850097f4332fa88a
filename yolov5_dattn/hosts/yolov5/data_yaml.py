"""Data YAMLs whose relative `path:` means "relative to this YAML", as a user reading the file expects.

YOLOv5 7.0.14's `check_dataset` resolves a relative `path:` against the yolov5 *package* folder
(site-packages/yolov5), so `path: ../demo/data/det` in configs/demo_shapes.yaml would point into the
Python installation. We resolve it against the YAML's own folder when that folder exists there, and
otherwise keep YOLOv5's meaning (its own data/*.yaml use `path: ../datasets/coco128` relative to the package).
"""
import os
from pathlib import Path
from typing import Union

WHY = "a data YAML's relative path: is relative to the YAML"


def resolve_path(data_yaml: Union[str, Path], data: dict) -> dict:
    """Return `data` (the YAML's dict) with a relative `path:` made absolute against the YAML's folder,
    when that folder exists; unchanged otherwise.

    The YAML's folder is taken as written (a checkout's `configs/` is a link into the package) and, failing
    that, with links resolved. A YAML shipped in the package reads its `path:` as in a checkout run from the
    current folder (./configs/<yaml>), so `../demo/data/det` is ./demo/data/det, where the demo writes its data.
    """
    from yolov5_dattn.shipped import relative
    path = data.get("path")
    if path and not Path(str(path)).is_absolute():
        anchors = [Path(os.path.abspath(data_yaml)).parent, Path(data_yaml).resolve().parent]
        shipped = relative(data_yaml)
        if shipped is not None:
            anchors.append(Path.cwd() / "configs" / shipped.parent)
        for anchor in anchors:
            candidate = Path(os.path.normpath(anchor / str(path)))
            if candidate.is_dir():
                return {**data, "path": str(candidate)}
        if shipped is not None:  # not generated yet: point the val-images check at where it would be
            return {**data, "path": os.path.normpath(anchors[-1] / str(path))}
    return data


def _require_val(data_yaml, data: dict) -> None:
    """UserError naming the YAML when its val images are missing (YOLOv5 would try to download them)."""
    from yolov5_dattn.errors import UserError
    val = data.get("val")
    for v in (val if isinstance(val, (list, tuple)) else [val]):
        if v and not (Path(data["path"]) / str(v)).exists():
            raise UserError(f"--data {data_yaml}: val images not found at {Path(data['path']) / str(v)}: "
                            f"create them (for the demo data: yolov5-dattn make-demo-data, or "
                            f"python scripts/make_demo_data.py in a checkout) or fix path:/val: in the YAML")


def install() -> None:
    """Make YOLOv5's `check_dataset` (wherever it was imported by name) resolve relative `path:` as above.

    Idempotent; wraps whatever `check_dataset` is current (e.g. the compat layer's offline version).
    """
    import sys

    from yolov5.utils import general

    from yolov5_dattn import patching
    if patching.is_patched(general, "check_dataset", WHY):
        return
    current = general.check_dataset

    def check_dataset(data, autodownload=True):
        """YOLOv5's check_dataset, with a YAML's relative `path:` taken relative to the YAML."""
        if isinstance(data, (str, Path)) and str(data).endswith((".yaml", ".yml")) and Path(data).is_file():
            loaded = general.yaml_load(data)
            resolved = resolve_path(data, loaded)
            if resolved is not loaded:
                _require_val(data, resolved)
                data = resolved
        return current(data, autodownload)

    also = [m for n, m in list(sys.modules.items()) if m is not None and (n == "yolov5" or n.startswith("yolov5."))]
    with patching.applying("data_yaml.install"):
        patching.patch(general, "check_dataset", check_dataset, why=WHY, also=also)
