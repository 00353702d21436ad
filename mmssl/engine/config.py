"""``EngineConfig``: what the training engine reads (optimization, precision, validation,
checkpoints, logging). Each training command's config has it as its engine group (``mmssl train``)
or extends it (the pretraining commands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class EngineConfig:
    """What the engine itself reads: optimization, precision, validation, checkpoints, logging.

    ``mmssl train``'s ``TrainConfig`` holds it as its engine group; the pretraining commands'
    configs (``mmssl.pretrain``) extend it with their task's fields.
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
    overwrite: bool = field(
        default=False, metadata={"help": "replace the run already in OUT (its metrics, models and checkpoint)"}
    )
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
