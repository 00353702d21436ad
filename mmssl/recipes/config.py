"""``TrainConfig`` (``mmssl train``) and its groups: engine, data, model, negatives and one group per
recipe (text_code, image_text); ``ContrastivePretrainConfig`` (``mmssl pretrain contrastive``): the
same with the self-supervised pairs' group. Each builder takes the groups it uses; the flags keep their names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mmssl.engine.config import EngineConfig
from mmssl.options import GroupedConfig, option


@dataclass(frozen=True)
class TrainEngineConfig(EngineConfig):
    """The engine's options with ``mmssl train``'s defaults."""

    GROUP_TITLE: ClassVar[str] = "engine: optimization, precision, validation, checkpoints"
    batch_size: int = option(64, "pairs per micro-batch, all processes together: the InfoNCE negatives")


@dataclass(frozen=True)
class PairDataConfig:
    """Which pairs are trained and validated on, and how bad images are handled."""

    GROUP_TITLE: ClassVar[str] = "data"
    task: str = option("text-code", "the recipe: text-code, image-text (or a registered one)")
    train: str = option(
        "",
        "training data: text-code: CodeSearchNet .jsonl[.gz] file or folder; image-text: CSV/TSV, "
        "JSONL, imagefolder (metadata.jsonl), saved datasets dir, or WebDataset .tar shards",
    )
    train_partition: str | None = option("train", "keep records with this partition ('': every record)")
    valid: str | None = option(None, "validation data (default: the training source)")
    valid_partition: str | None = option("valid", "partition of the validation records")
    eval_max_pairs: int = option(2000, "validation pairs used")
    on_bad: Literal["skip", "raise"] = option("skip", "image-text: bad images are skipped and counted, or stop the run")
    first_caption_p: float | None = option(
        None,
        "image-text, several captions per image: the share of steps that draw each image's first "
        "caption (an emoji's name); the others share the rest (default: every caption alike)",
    )
    cache_images_mb: float = option(2048.0, "image-text: decoded images kept in memory up to this size")


@dataclass(frozen=True)
class DualModelConfig:
    """What every dual-encoder recipe reads: the query tower, the shared size, the contrastive loss."""

    GROUP_TITLE: ClassVar[str] = "model: towers and loss (every recipe)"
    text_init: str | None = option(
        None, "query tower: model dir (e.g. an `mmssl pretrain` output), hub name or 'minilm'"
    )
    embed_dim: int | None = option(None, "shared size (default: the pretrained tower's, or 256)")
    max_text_length: int = option(64, "query tokens")
    dropout: float | None = option(
        None, "set every dropout of the towers (0: off, about 2x the samples/s on CPU; default: the model's)"
    )
    temperature: float = option(0.07, "initial temperature (learnable)")
    embedding_lr_scale: float = option(
        1.0,
        "token embeddings of transformers text/code towers train at this multiple of --lr (below 1 keeps "
        "a pretrained tower's lexical identity; 0 freezes them)",
    )
    label_smoothing: float = option(0.0, "InfoNCE label smoothing")
    matryoshka: str | None = option(
        None,
        "nested embeddings: the loss summed over these leading prefix sizes, e.g. 512,256,128,64 "
        "(mmssl index build --dim, mmssl eval --dims then use a prefix)",
    )
    matryoshka_weights: str | None = option(None, "one weight per --matryoshka size (default: 1 each)")
    matryoshka_init: Literal["auto", "none", "pca"] = option(
        "auto",
        "pca: before the first step, turn the towers' output to the principal axes of their "
        "embeddings of 1,024 training pairs, so that each --matryoshka prefix starts as the best "
        "subspace of its size (full-size cosines unchanged); auto: pca where every tower is a "
        "pretrained transformers tower (MiniLM, an mmssl pretrain output), else none",
    )
    grad_cache: int = option(
        0,
        "GradCache: embed the batch this many pairs at a time (0: all at once); the batch's "
        "memory becomes that of a chunk, gradients unchanged",
    )


@dataclass(frozen=True)
class NegativesConfig:
    """Mined hard negatives as extra InfoNCE columns, and their refresh during training (ANCE)."""

    GROUP_TITLE: ClassVar[str] = "hard negatives"
    negatives: str | None = option(
        None, "hard negatives of the training pairs, from `mmssl mine-negatives` on the same --train"
    )
    hard_negatives: int = option(
        1, "hard negatives per pair per step, drawn from its mined ones (extra InfoNCE columns)"
    )
    refresh_negatives: int = option(
        0,
        "ANCE: re-mine hard negatives with the current model every N steps (0: never), in a "
        "background thread; used from N/2 steps later",
    )
    refresh_async: bool = option(True, "mine refreshes in a background thread (false: at the step itself)")
    refresh_source: Literal["model", "both"] = option(
        "model", "refreshes retrieve with the model, or model + BM25 fused"
    )
    cluster_batches: int = option(
        0,
        "in-batch hard negatives: the training pairs clustered (k-means over their queries' embeddings "
        "under the starting text tower) into groups of about N, each batch made of whole groups "
        "(0: random batches). For a pretrained or locked text tower",
    )


@dataclass(frozen=True)
class TextCodeConfig:
    """The text-code recipe: the code tower, and towers built from scratch."""

    GROUP_TITLE: ClassVar[str] = "text-code recipe"
    code_init: str | None = option(None, "code tower: model dir, hub name or 'minilm'")
    shared: bool = option(False, "one tower for both sides")
    arch: Literal["bert", "roberta", "gpt2"] = option("roberta", "from-scratch arch")
    preset: str = option("small", "from-scratch size: nbow (no layer), tiny, mini, small, base")
    pooling: Literal["cls", "mean", "last"] = option(
        "mean", "pooling: cls or mean (encoders), last or mean (causal models)"
    )
    vocab_size: int = option(8000, "BPE vocabulary trained on the corpus")
    split_identifiers: bool = option(
        True, "corpus BPE: split camelCase/snake_case into lowercase words (false: plain byte-level)"
    )
    max_code_length: int = option(256, "code tokens")


@dataclass(frozen=True)
class ImageTextConfig:
    """The image-text recipe: the image tower, its text tower when not --text-init, LiT locking."""

    GROUP_TITLE: ClassVar[str] = "image-text recipe"
    image_model: str = option(
        "mmssl-vit-tiny",
        "open_clip model config (ViT-B-32, RN50, ...), mmssl-vit-tiny/-micro, a .json, "
        "or torchvision:ARCH (resnet50, ...; with --text-model or --text-init)",
    )
    image_weights: str | None = option(
        None, "a local open_clip or torchvision checkpoint (or a pretrained tag, online)"
    )
    image_init: str | None = option(
        None, "start the image tower from a saved one (`mmssl pretrain <method>`'s OUT/best)"
    )
    text_model: str | None = option(
        None, "open_clip text tower config (default: the image model's); --text-init instead"
    )
    context_length: int | None = option(None, "open_clip text tokens (default: the config's)")
    augment: Literal["none", "heavy"] = option("none", "none (open_clip's crop) or heavy (crop 0.3-1, colour jitter)")
    flip: bool = option(False, "random horizontal flips")
    image_size: int | None = option(None, "override the input size")
    lock_text: bool = option(False, "freeze the text tower (LiT)")
    lock_image: bool = option(False, "freeze the image tower")
    unlock_norms: bool = option(False, "a locked tower keeps its norm layers trainable")


@dataclass(frozen=True)
class TrainConfig(GroupedConfig):
    """Train a dual encoder with symmetric InfoNCE (``--config FILE`` reads TOML/YAML/JSON defaults,
    flat or in tables by group: [engine], [data], [model], [negatives], [text_code], [image_text])."""

    engine: TrainEngineConfig = field(default_factory=TrainEngineConfig)
    data: PairDataConfig = field(default_factory=PairDataConfig)
    model: DualModelConfig = field(default_factory=DualModelConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    text_code: TextCodeConfig = field(default_factory=TextCodeConfig)
    image_text: ImageTextConfig = field(default_factory=ImageTextConfig)


@dataclass(frozen=True)
class CodePairsConfig:
    """Which self-supervised pairs code gives, and the validation share."""

    GROUP_TITLE: ClassVar[str] = "self-supervised code pairs"
    views: str = option("name,signature,spans", "comma list: name (name words <-> code, name masked), "
                        "signature (def header <-> body), spans (first half <-> second half)")  # fmt: skip
    valid_every: int = option(50, "one function in N (by a hash of its code) held out for validation")


@dataclass(frozen=True)
class SharedTowerConfig(TextCodeConfig):
    """The text-code recipe's tower options; pretraining trains one shared tower."""

    shared: bool = option(True, "one tower for both sides (pretraining makes one tower: keep it)")


@dataclass(frozen=True)
class ContrastivePretrainConfig(TrainConfig):
    """Pretrain a code tower contrastively on pairs code gives by itself (``--config FILE`` reads
    TOML/YAML/JSON). ``--train`` is unlabeled code (``mmssl data mine-code --unlabeled``)."""

    text_code: SharedTowerConfig = field(default_factory=SharedTowerConfig)
    pairs: CodePairsConfig = field(default_factory=CodePairsConfig)
