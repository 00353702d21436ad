"""Export a text/code dual encoder as a sentence-transformers model (``mmssl export --format
sentence-transformers``): ``SentenceTransformer(OUT)`` loads it offline and embeds as mmssl does.

Each tower becomes the modules sentence-transformers composes: ``Transformer`` (the backbone and
its tokenizer, truncating at the tower's max length), ``Pooling`` (the tower's rule: cls, mean or
last token), ``Dense`` (the projection, no bias, no activation) and ``Normalize``. A shared tower
with one truncation length is one pipeline; otherwise the two sides go through a ``Router``: the
query modality (``text``) on the ``query`` route (``model.encode_query``), the other on
``document`` (``model.encode_document``, also plain ``encode``). The export is checked against
``DualEncoder.embed`` on sample texts before it appears (written atomically).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mmssl.console import get_logger
from mmssl.io import atomic_dir

log = get_logger("export")

POOLING = {"cls": "cls", "mean": "mean", "last": "lasttoken"}  # mmssl's name -> sentence-transformers'
MIN_COSINE = 0.9999


def export_sentence_transformers(model_dir: str | Path, out: str | Path, sample_texts) -> dict:
    """Write ``out`` from the mmssl model directory ``model_dir``; returns the parity per side."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from mmssl.export import agreement, load_text_model

    model_dir = Path(model_dir)
    model = load_text_model(model_dir, "--format sentence-transformers")
    first, second = model.config.modalities

    def pipeline(modality: str) -> list[nn.Module]:
        tower, config = model.towers[modality], model.config.towers[modality]
        stored = first if model.config.shared else modality  # a shared tower is stored once
        hidden = tower.backbone.config.hidden_size
        projection = tower.proj.weight.detach().clone()
        return [
            Transformer(str(model_dir / "towers" / stored), max_seq_length=config.max_length),
            Pooling(hidden, POOLING[config.pooling]),
            Dense(
                hidden, model.config.embed_dim, bias=False, activation_function=nn.Identity(), init_weight=projection
            ),
            Normalize(),
        ]

    one = model.config.shared and model.config.towers[first].max_length == model.config.towers[second].max_length
    modules = pipeline(first) if one else [Router.for_query_document(pipeline(first), pipeline(second))]
    exported = SentenceTransformer(modules=modules, device="cpu")
    texts = list(sample_texts)
    parity = {}
    for modality, encode in ((first, exported.encode_query), (second, exported.encode_document)):
        parity[modality] = agreement(encode(texts, convert_to_numpy=True), model.embed(modality, texts))
        cosine = parity[modality]["min_cosine"]
        if cosine < MIN_COSINE:
            raise ValueError(f"sentence-transformers export of the {modality} tower: cosine {cosine:.5f} to mmssl")
    with atomic_dir(out) as tmp:
        exported.save(str(tmp))
    log.info("wrote %s: %s", out, parity)
    return parity
