"""The image-text recipe: image-caption pairs -> a CLIP-style text/image dual encoder, scored by
recall both ways.

Queries are captions (the "text" side, so that text->image search is query -> candidate as in the
text-code recipe), candidates are images. The text tower is open_clip's text transformer with its
BPE tokenizer (``--text-model``, default: the image model's own config), or a ``transformers``
tower from ``--text-init``. ``--lock-text`` trains the image tower against a frozen text tower
(LiT), ``--lock-image`` the other way round; ``--unlock-norms`` leaves the locked tower's norms
trainable.

Its pairs are read by ``mmssl.recipes.image_pairs.load_image_pairs`` (every image opened once
before training) and scored by ``retrieval_scores`` there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mmssl.data.pairs import Pairs
from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
from mmssl.models.clip_text import ClipTextConfig
from mmssl.models.image import TORCHVISION, ImageTowerConfig
from mmssl.models.text import hidden_size, resolve_init, sentence_pooling
from mmssl.recipes.base import IndexItems, Recipe
from mmssl.recipes.config import DualModelConfig, ImageTextConfig, PairDataConfig, TrainConfig
from mmssl.recipes.image_pairs import METRIC, embed_pairs, further_captions, load_image_pairs, retrieval_scores


def text_tower_config(model: DualModelConfig, options: ImageTextConfig) -> TowerConfig | ClipTextConfig:
    if model.text_init:
        pooling = sentence_pooling(resolve_init(model.text_init))
        return TowerConfig(init=model.text_init, pooling=pooling, max_length=model.max_text_length)
    name = options.text_model or options.image_model
    if name.startswith(TORCHVISION):
        raise ValueError(
            f"--image-model {options.image_model} has no text tower: give --text-model (an open_clip config, "
            "e.g. mmssl-vit-tiny or ViT-B-32) or --text-init (a transformers encoder)"
        )
    return ClipTextConfig(model=name, context_length=options.context_length)


class ImageTextRecipe(Recipe):
    name, modalities, group, metric = "image-text", ("text", "image"), "image_text", METRIC

    def load_pairs(
        self, source: str, partition: str | None, data: PairDataConfig | None = None, max_pairs: int | None = None
    ) -> Pairs:
        data = data or PairDataConfig()
        return load_image_pairs(source, partition, data.on_bad, data.cache_images_mb, max_pairs)

    def evaluate(self, model: DualEncoder, pairs: Pairs, batch_size: int = 128) -> dict:
        images, texts = embed_pairs(model, pairs, batch_size)
        return {**retrieval_scores(images, texts, pairs.ids), "n": len(pairs), "captions": len(texts)}

    def check(self, config: TrainConfig) -> None:
        if config.image_text.lock_text and config.image_text.lock_image:
            raise ValueError("--lock-text and --lock-image together leave nothing to train")

    def build_model(self, model: DualModelConfig, options: ImageTextConfig, train: Pairs | None = None) -> DualEncoder:
        """The text/image dual encoder (``train`` is not needed: both towers bring their tokenizer)."""
        text = text_tower_config(model, options)
        init = options.image_init
        if init and options.image_weights:
            raise ValueError("--image-init and --image-weights both give the image tower's weights: pick one")
        image = ImageTowerConfig(
            model=f"local-dir:{init}" if init else options.image_model,  # the saved tower's own architecture
            weights=init or options.image_weights,
            augment=options.augment,
            flip=options.flip,
            image_size=options.image_size,
        )
        embed_dim = model.embed_dim
        if embed_dim is None and model.text_init:  # the pretrained text tower's own size (LiT keeps its space)
            embed_dim = hidden_size(model.text_init)
        if embed_dim is None:
            import open_clip

            from mmssl.models.image import _register

            # the open_clip config's own size: the image model's, or the text model's beside a torchvision tower
            name = options.text_model if options.image_model.startswith(TORCHVISION) else options.image_model
            embed_dim = int(open_clip.get_model_config(_register(name))["embed_dim"])
        dual = DualEncoderConfig(
            modalities=self.modalities,
            towers={"text": text, "image": image},
            embed_dim=embed_dim,
            init_temperature=model.temperature,
        )
        dual_encoder = DualEncoder.build(dual)
        if options.lock_text:
            dual_encoder.lock("text", unlock_norms=options.unlock_norms)
        if options.lock_image:
            dual_encoder.lock("image", unlock_norms=options.unlock_norms)
        return dual_encoder

    def index_items(self, model, data, modality, text_field, partition, max_items):
        """Image-caption pairs: images (payload: absolute path, caption, metadata) or their captions.
        ``text_field``: the record field that is the caption (e.g. an emoji's ``name``; default ``text``)."""
        pairs = load_image_pairs(data, partition or None, cache_mb=0)
        records = pairs.candidates[:max_items] if max_items else pairs.candidates
        if not records:
            raise ValueError(f"{data}: no usable images" + (f" in split {partition!r}" if partition else ""))
        if text_field and text_field != "text":
            missing = next((r for r in records if not isinstance(r.meta.get(text_field), str)), None)
            if missing is not None:
                raise ValueError(f"{missing.where}: no text field {text_field!r} (--text-field)")
            records = [replace(r, text=r.meta[text_field]) for r in records]
        texts = [r.text for r in records]
        payloads = [
            {
                **{k: v for k, v in r.meta.items() if k not in ("file_name", "text")},
                # absolute: the app that shows the image may run from another folder
                "path": str(Path(r.image).resolve()) if isinstance(r.image, (str, Path)) else r.where,
                "caption": r.text,
            }
            for r in records
        ]
        if model.is_image(modality):
            # the store's text (BM25's too): every caption of the image ("red apple · apple · fruit · red")
            shown = [" · ".join(dict.fromkeys([r.text, *further_captions(r)])) for r in records]
            return IndexItems(records, shown, payloads, texts, len(pairs.candidates))
        return IndexItems(texts, texts, payloads, records, len(pairs.candidates))

    def eval_command(self, config) -> int:
        from mmssl.recipes.image_text_eval import eval_command

        return eval_command(config)


RECIPE = ImageTextRecipe()
