"""Models that leave mmssl: a trained dual encoder written in formats other tools load.

``mmssl.export.onnx`` writes each tower as one ONNX graph from token ids (or pixels) to the
normalized embedding (``mmssl export --format onnx``); ``mmssl.export.onnx_encoder`` runs such an export with
onnxruntime and the ``tokenizers`` library alone (no torch), and is what ``mmssl index build|search``
and the app use when their model is an export (``load_encoder``).
"""


def load_text_model(model_dir, what: str, images: bool = False):
    """The mmssl model at ``model_dir`` in eval mode, refused (naming the tower) unless every tower
    is a transformers text/code tower (or, with ``images``, an image tower): what ``what`` (an
    export format) takes."""
    from mmssl.models import DualEncoder, TextTower
    from mmssl.models.image import ImageTower

    model = DualEncoder.from_pretrained(model_dir).eval()
    kinds = (TextTower, ImageTower) if images else (TextTower,)
    for modality, tower in model.towers.items():
        if not isinstance(tower, kinds):
            takes = "transformers text towers" + (" and image towers" if images else "")
            hint = " (an open_clip text tower: --format open_clip)" if type(tower).__name__ == "ClipTextTower" else ""
            raise ValueError(f"{model_dir}: tower {modality!r} is a {type(tower).__name__}; {what} takes {takes}{hint}")
    return model


def agreement(got, want) -> dict:
    """How an export's (N, D) normalized embeddings agree with mmssl's on the same texts:
    {"max_abs_diff", "min_cosine"}, what every export records and is checked by."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    diff, cosine = float(np.abs(got - want).max()), float((got * want).sum(1).min())
    return {"max_abs_diff": round(diff, 7), "min_cosine": round(cosine, 6)}


def sample_images(n: int = 8, size: int = 96) -> list:
    """Deterministic test images: coloured shapes on gradients, of several sizes and aspect ratios
    (so that resizing and cropping are exercised; no files, no network)."""
    from PIL import Image, ImageDraw

    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    images = []
    for i in range(n):
        image = Image.linear_gradient("L").resize((size + 9 * i, size - 5 * i)).convert("RGB")
        draw = ImageDraw.Draw(image)
        box = (8 + 3 * i, 10 + 2 * i, size - 10 - i, size - 8 - 2 * i)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colours[i % len(colours)])
        images.append(image)
    return images
