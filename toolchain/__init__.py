"""edgeq: one fine-tuning run, then a verified, quantized ONNX model for every edge device."""
