"""ONNX export of quantized models with integer QDQ weights (installed as toolchain.exporters)."""
