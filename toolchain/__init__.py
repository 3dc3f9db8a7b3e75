"""edgeq: one fine-tuning run, then a verified, quantized ONNX model for every edge device."""

__version__ = "0.1.0"
