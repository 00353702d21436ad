"""The training commands' configs: ``EngineConfig`` (what the engine reads) and ``TrainConfig``
(``mmssl train``: the dual-encoder tasks). One frozen dataclass per command, filled once at the
entry point (``mmssl.cli`` turns the flags into it; ``--config FILE`` supplies defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class EngineConfig:
    """What the engine itself reads: optimization, precision, validation, checkpoints, logging.

    Each training command's config (``TrainConfig`` here, the pretraining ones in
    ``mmssl.pretrain``) extends it with its task's fields.
    """

    out: str = field(default="runs/text-code", metadata={"help": "output directory"})
    batch_size: int = field(
        default=64, metadata={"help": "examples per micro-batch, summed over processes (torchrun: split among them)"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (not on biases/norms)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (CLIP's recipe for ViTs: 0.98)"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon (CLIP's recipe for ViTs: 1e-6)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warmup steps"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    max_minutes: float | None = field(default=None, metadata={"help": "also stop after this wall time"})
    clip_grad: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    precision: Literal["fp32", "bf16", "fp16"] = field(default="fp32", metadata={"help": "autocast precision"})
    device: str = field(default="auto", metadata={"help": "auto (cuda, mps, cpu), cpu, cuda[:N], mps"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order, masking and dropout"})
    eval_every: int = field(default=200, metadata={"help": "validate every N steps (0: only at the end)"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps"})
    log_every: int = field(default=10, metadata={"help": "log every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/checkpoints/last"})
    workers: int = field(
        default=-1,
        metadata={
            "help": "data-loader worker processes making batches (images: decode + augment) ahead of the step "
            "(-1: 0 on CPU, where batches made in process are fastest; on a GPU up to 8 per process)"
        },
    )
    grad_checkpointing: bool = field(
        default=False, metadata={"help": "activation checkpointing in the towers (less memory, ~1/3 more compute)"}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (GPU: faster after a warm-up)"})
    tf32: bool = field(default=True, metadata={"help": "TF32 matmuls on Ampere+ GPUs (fp32 runs)"})


@dataclass(frozen=True)
class TrainConfig(EngineConfig):
    """Train a dual encoder with symmetric InfoNCE (``--config FILE`` reads TOML/YAML/JSON defaults)."""

    task: Literal["text-code", "image-text"] = field(default="text-code", metadata={"help": "what to train"})
    train: str = field(
        default="",
        metadata={
            "help": "training data: text-code: CodeSearchNet .jsonl[.gz] file or folder; image-text: CSV/TSV, "
            "JSONL, imagefolder (metadata.jsonl), saved datasets dir, or WebDataset .tar shards"
        },
    )
    train_partition: str | None = field(default="train", metadata={"help": "keep records with this partition"})
    valid: str | None = field(default=None, metadata={"help": "validation data (default: the training source)"})
    valid_partition: str | None = field(default="valid", metadata={"help": "partition of the validation records"})
    batch_size: int = field(
        default=64,
        metadata={"help": "pairs per micro-batch, all processes together: the InfoNCE negatives"},
    )
    grad_cache: int = field(
        default=0,
        metadata={
            "help": "GradCache: embed the batch this many pairs at a time (0: all at once); the batch's "
            "memory becomes that of a chunk, gradients unchanged"
        },
    )
    # hard negatives (mmssl.negatives)
    negatives: str | None = field(
        default=None,
        metadata={"help": "hard negatives of the training pairs, from `mmssl mine-negatives` on the same --train"},
    )
    hard_negatives: int = field(
        default=1,
        metadata={"help": "hard negatives per pair per step, drawn from its mined ones (extra InfoNCE columns)"},
    )
    refresh_negatives: int = field(
        default=0,
        metadata={
            "help": "ANCE: re-mine hard negatives with the current model every N steps (0: never), in a "
            "background thread; used from N/2 steps later"
        },
    )
    refresh_async: bool = field(
        default=True, metadata={"help": "mine refreshes in a background thread (false: at the step itself)"}
    )
    refresh_source: Literal["model", "both"] = field(
        default="model", metadata={"help": "refreshes retrieve with the model, or model + BM25 fused"}
    )
    # model
    text_init: str | None = field(
        default=None,
        metadata={"help": "query tower: model dir (e.g. an `mmssl pretrain` output), hub name or 'minilm'"},
    )
    code_init: str | None = field(default=None, metadata={"help": "code tower: model dir, hub name or 'minilm'"})
    shared: bool = field(default=False, metadata={"help": "one tower for both sides"})
    arch: Literal["bert", "roberta", "gpt2"] = field(default="roberta", metadata={"help": "from-scratch arch"})
    preset: str = field(
        default="small", metadata={"help": "from-scratch size: nbow (no layer), tiny, mini, small, base"}
    )
    pooling: Literal["cls", "mean", "last"] = field(
        default="mean", metadata={"help": "pooling: cls or mean (encoders), last or mean (causal models)"}
    )
    embed_dim: int | None = field(
        default=None, metadata={"help": "shared size (default: the pretrained tower's, or 256)"}
    )
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary trained on the corpus"})
    split_identifiers: bool = field(
        default=True,
        metadata={"help": "corpus BPE: split camelCase/snake_case into lowercase words (false: plain byte-level)"},
    )
    dropout: float | None = field(
        default=None,
        metadata={
            "help": "set every dropout of the towers (0: off, about 2x the samples/s on CPU; default: the model's)"
        },
    )
    max_text_length: int = field(default=64, metadata={"help": "query tokens"})
    max_code_length: int = field(default=256, metadata={"help": "code tokens"})
    temperature: float = field(default=0.07, metadata={"help": "initial temperature (learnable)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "InfoNCE label smoothing"})
    eval_max_pairs: int = field(default=2000, metadata={"help": "validation pairs used"})
    # image-text
    image_model: str = field(
        default="mmssl-vit-tiny",
        metadata={
            "help": "image-text: open_clip model config (ViT-B-32, RN50, ...), mmssl-vit-tiny/-micro, a .json, "
            "or torchvision:ARCH (resnet50, ...; with --text-model or --text-init)"
        },
    )
    image_weights: str | None = field(
        default=None,
        metadata={"help": "image-text: a local open_clip or torchvision checkpoint (or a pretrained tag, online)"},
    )
    image_init: str | None = field(
        default=None,
        metadata={"help": "image-text: start the image tower from a saved one (`mmssl pretrain <method>`'s OUT/best)"},
    )
    text_model: str | None = field(
        default=None,
        metadata={"help": "image-text: open_clip text tower config (default: the image model's); --text-init instead"},
    )
    context_length: int | None = field(
        default=None, metadata={"help": "image-text: open_clip text tokens (default: the config's)"}
    )
    augment: Literal["none", "heavy"] = field(
        default="none", metadata={"help": "image-text: none (open_clip's crop) or heavy (crop 0.3-1, colour jitter)"}
    )
    flip: bool = field(default=False, metadata={"help": "image-text: random horizontal flips"})
    image_size: int | None = field(default=None, metadata={"help": "image-text: override the input size"})
    lock_text: bool = field(default=False, metadata={"help": "image-text: freeze the text tower (LiT)"})
    lock_image: bool = field(default=False, metadata={"help": "image-text: freeze the image tower"})
    unlock_norms: bool = field(default=False, metadata={"help": "a locked tower keeps its norm layers trainable"})
    on_bad: Literal["skip", "raise"] = field(
        default="skip", metadata={"help": "image-text: bad images are skipped and counted, or stop the run"}
    )
    cache_images_mb: float = field(
        default=2048.0, metadata={"help": "image-text: decoded images kept in memory up to this size"}
    )
