"""Export to ONNX and TorchScript with decoding and NMS inside the graph (docs/EXPORT.md).

`graph.py` (the exported module), `build.py` (from a `Detector`), `metadata.py`, `onnx.py`,
`torchscript.py` (writers), `archive.py` (the TorchScript archive read back) and `runtime.py`
(`ExportedDetector`: ``predict`` over a file).
"""
