"""Everything that touches YOLOv5: the blocks built from its modules, the hook into `parse_model`
(`registry`), the compatibility shims (`compat`), safe checkpoints, the run-time checks of the
train/val/detect/export wrappers (`entrypoint`, `preflight`, `fmap`, `input_checks`, `resume`), export
(`deploy`) and git clones (`clone`).

`install()` is what `import yolov5_dattn` does to the pip package once `yolov5` is imported.
"""


def install() -> None:
    """Make the pip package `yolov5` run our modules (idempotent): the compatibility shims its model code
    needs, the registry hook in `parse_model`, the model summary that counts the attention, and the shipped
    configs by bare name."""
    from yolov5_dattn import shipped
    from yolov5_dattn.yolov5 import compat, registry, summary
    compat.apply()
    registry.register()
    summary.install()
    shipped.install()


# Importing this layer imports YOLOv5 first, so the integration is installed (yolov5_dattn.import_hook) before
# any of our YOLOv5 modules starts importing: `blocks` imports YOLOv5 and `install` imports `blocks`.
import yolov5  # noqa: E402,F401
