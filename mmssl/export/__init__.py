"""Models that leave mmssl: a trained dual encoder written in formats other tools load.

``mmssl.export.onnx`` writes each tower as one ONNX graph from token ids to the normalized
embedding (``mmssl export --format onnx``); ``mmssl.export.onnx_encoder`` runs such an export with
onnxruntime and the ``tokenizers`` library alone (no torch), and is what ``mmssl index build|search``
and the app use when their model is an export (``load_encoder``).
"""


def load_text_model(model_dir, what: str):
    """The mmssl model at ``model_dir`` in eval mode, refused (naming the tower) unless every tower
    is a transformers text/code tower: what ``what`` (an export format) takes."""
    from mmssl.models import DualEncoder, TextTower

    model = DualEncoder.from_pretrained(model_dir).eval()
    for modality, tower in model.towers.items():
        if not isinstance(tower, TextTower):
            raise ValueError(f"{model_dir}: tower {modality!r} is a {type(tower).__name__}; {what} takes text towers")
    return model


def agreement(got, want) -> dict:
    """How an export's (N, D) normalized embeddings agree with mmssl's on the same texts:
    {"max_abs_diff", "min_cosine"}, what every export records and is checked by."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    diff, cosine = float(np.abs(got - want).max()), float((got * want).sum(1).min())
    return {"max_abs_diff": round(diff, 7), "min_cosine": round(cosine, 6)}
