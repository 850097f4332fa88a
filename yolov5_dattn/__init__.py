"""yolov5-dattn: DAT's deformable attention (Xia et al., CVPR 2022) as YOLOv5 modules.

`import yolov5_dattn` registers `DAttention`, `Bottleneck_DAttention` and `C3_DAttention` into YOLOv5's
`parse_model`, as the recipe's users expect: at once if YOLOv5 is imported already, otherwise the moment
it is (`import_hook`), so `yolov5_dattn.nn` alone needs neither YOLOv5 nor its import time.

Layers: `nn` (the math), `core` (host-neutral), `hosts/yolov5` and `hosts/ultralytics` (the adapters, imported as
`yolov5_dattn.yolov5` and `yolov5_dattn.ultralytics`), `analysis`, `cli`.
"""
from yolov5_dattn.hosts import public_names
from yolov5_dattn.import_hook import when_imported
from yolov5_dattn.nn import DAttention, LayerNormProxy, dattention_kwargs

__version__ = "0.1.0"
__all__ = ["DAttention", "Bottleneck_DAttention", "C3_DAttention", "LayerNormProxy", "dattention_kwargs",
           "register", "register_module", "RegistryConflict", "UnsupportedYOLOv5"]

# names that live in the YOLOv5 layer: importing them imports YOLOv5 (and so installs the integration)
_FROM_YOLOV5 = {"Bottleneck_DAttention": "blocks", "C3_DAttention": "blocks", "register": "registry",
                "register_module": "registry", "RegistryConflict": "registry", "UnsupportedYOLOv5": "registry"}

public_names.install()


def __getattr__(name):
    if name in _FROM_YOLOV5:
        import importlib
        return getattr(importlib.import_module(f"yolov5_dattn.hosts.yolov5.{_FROM_YOLOV5[name]}"), name)
    raise AttributeError(f"module 'yolov5_dattn' has no attribute {name!r}")


def _before_yolov5() -> None:
    from yolov5_dattn.hosts.yolov5 import compat
    compat.apply_before_import()


def _after_yolov5() -> None:
    from yolov5_dattn.hosts.yolov5 import install
    install()


when_imported("yolov5", _before_yolov5, _after_yolov5)
