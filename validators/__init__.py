"""Validation of exported models in onnxruntime (installed as toolchain.validators)."""
