"""yolov5-dattn: DAT's deformable attention (Xia et al., CVPR 2022) as YOLOv5 modules.

Importing the package applies the compatibility layer and registers `DAttention`,
`Bottleneck_DAttention` and `C3_DAttention` into YOLOv5's `parse_model`.
"""
from yolov5_dattn.yolov5 import compat

compat.apply_before_import()

from yolov5_dattn.yolov5.blocks import Bottleneck_DAttention, C3_DAttention, dattention_kwargs  # noqa: E402
from yolov5_dattn.nn.dattention import DAttention  # noqa: E402
from yolov5_dattn.nn.layernorm import LayerNormProxy  # noqa: E402
from yolov5_dattn.yolov5.registry import UnsupportedYOLOv5, register, register_module  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DAttention", "Bottleneck_DAttention", "C3_DAttention", "LayerNormProxy", "dattention_kwargs",
           "register", "register_module", "UnsupportedYOLOv5"]

compat.apply()
register()
from yolov5_dattn.yolov5 import summary; summary.install()  # noqa: E402,E702  model.info(): GFLOPs at the run's imgsz, attention included
from yolov5_dattn import shipped; shipped.install()  # noqa: E402,E702  Model("yolov5n_c3_dattn.yaml"): the shipped configs by name
