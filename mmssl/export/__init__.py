"""Models that leave mmssl: a trained dual encoder written in formats other tools load.

``mmssl.export.onnx`` writes each tower as one ONNX graph from token ids to the normalized
embedding (``mmssl export --format onnx``); ``mmssl.export.onnx_encoder`` runs such an export with
onnxruntime and the ``tokenizers`` library alone (no torch), and is what ``mmssl index build|search``
and the app use when their model is an export (``load_encoder``).
"""
