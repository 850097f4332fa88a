"""The lowest ONNX opset a DAttention model exports to, for both hosts' exporters and checks.

DAttention samples its keys with `grid_sample` (the default sampler), which ONNX has from opset 16 on; the
gather sampler (`--sampler gather`) needs no such op.
"""
__all__ = ["MIN_ONNX_OPSET"]

MIN_ONNX_OPSET = 16
