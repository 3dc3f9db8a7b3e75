"""ONNX export of quantized models with integer QDQ weights (installed as toolchain.exporters).

Public entry points: `export_model` (-> `ExportResult`) and `twin_of` / `torch_twin`, the torch model that
computes exactly what an export computes (the reference for fidelity checks).
"""

from toolchain.exporters.export import ExportResult, export_model
from toolchain.exporters.twin import torch_twin, twin_of

__all__ = ["ExportResult", "export_model", "torch_twin", "twin_of"]
