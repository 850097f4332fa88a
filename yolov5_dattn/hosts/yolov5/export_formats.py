"""Plugin step: YOLOv5's export writes DAttention models: OpenVINO through the current `openvino` API (YOLOv5's own
needs the retired openvino-dev/`mo`), `run()` at opset 17 by default (it says 12, only the CLI 17; 12 has no
grid_sample) and TensorRT's ONNX step at the run's opset (hard-coded 12). The exporters are in `deploy`."""
from .host import PIP, Host, replace_function

__all__ = ["install"]


def install(host: Host = PIP) -> None:
    """Replace export.export_openvino, export.run and export.export_engine of `host` (the pip package's, or a
    clone's export.py while it runs) through `patching`. Idempotent."""
    from . import deploy
    export = host.module("export") if host is PIP else host.loaded("export")
    if export is not None:
        deploy.patch_export(export, lambda module, name, new, why: replace_function(module, name, new, host, why=why))
