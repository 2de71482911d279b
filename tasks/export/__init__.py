"""ONNX export: task export modules, the exporter, metadata, parity checks, quantization.

``tools/export_onnx.py`` drives it; ``tasks/inference.py`` (dependency-free) runs the result.
"""
