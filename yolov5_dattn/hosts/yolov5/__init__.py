"""Everything that touches YOLOv5: the blocks built from its modules, the hook into `parse_model` (`registry`),
the step table (`changes`, run by `compat`: repairs in `repairs`, policy in `policy`), safe checkpoints, the run seam
of the train/val/detect/export wrappers (`entrypoint`) and its checks (`run_checks`, `preflight`, `fmap`,
`input_checks`, `resume`), export (`deploy`) and git clones (`clone`).

`install()` is what `import yolov5_dattn` does to the pip package once `yolov5` is imported.
"""


def install() -> None:
    """Make the pip package `yolov5` run our modules (idempotent): the steps its model code needs (repairs
    and policy), the registry hook in `parse_model`, the model summary that counts the attention, and the shipped
    configs by bare name. What each step changes, and why, is the list in `changes`."""
    from yolov5_dattn.hosts.yolov5 import changes, compat
    compat.apply()
    changes.apply("install")


# Importing this layer imports YOLOv5 first, so the integration is installed (yolov5_dattn.import_hook) before
# any of our YOLOv5 modules starts importing: `blocks` imports YOLOv5 and `install` imports `blocks`. Not while
# the hook prepares that import (its `before()` imports `compat` from here).
import sys as _sys  # noqa: E402

from yolov5_dattn import import_hook as _import_hook  # noqa: E402

if "yolov5" not in _sys.modules and not _import_hook.finding("yolov5"):
    from yolov5_dattn.hosts.yolov5 import compat as _compat
    _compat.apply_before_import()  # what `import yolov5` itself needs, also without the hook
    import yolov5  # noqa: E402,F401
