"""Self-prediction tasks for the one training engine: masked LM (BERT-style) and causal LM (GPT-style).

Shape legend: B blocks in a batch, T tokens per block, H hidden size, V vocabulary, M masked tokens.

Both are ``mmssl.engine.Task``s (``batch``, ``training_forward``, ``evaluate`` on the held-out
blocks, gradient checkpointing through transformers; ``metric``/``greater_is_better`` pick the best
checkpoint: validation perplexity, lower is better). The model is a ``transformers``
``*ForMaskedLM`` / ``*ForCausalLM``; a saved directory holds it and its tokenizer and loads with
``transformers`` alone (``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``, or ``AutoModel`` for
the encoder without its head, which is what ``--text-init DIR`` does).

Masking is a ``mmssl.pretrain.masking.Masker`` (15 % of the tokens by default, of which 80 % become
``<mask>``, 10 % a random token, 10 % stay; by token, whole word, whole identifier or span). During
training it draws from torch's global generator, so the engine's checkpoint (which saves that
generator) resumes the exact masks; validation masks come from a fixed seed inside
``torch.random.fork_rng``, so every validation scores the same masked positions and leaves the
training stream untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.engine.task import Task
from mmssl.io import atomic_dir
from mmssl.pretrain.corpus import PackedBlocks
from mmssl.pretrain.masking import Masker
from mmssl.runtime import eval_mode

VALID_MASK_SEED = 1234


class _LMTask(Task):
    metric, greater_is_better = "perplexity", False

    def __init__(
        self, model: nn.Module, tokenizer, data: PackedBlocks, valid: PackedBlocks | None = None, batch_size: int = 32
    ) -> None:
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.valid, self.eval_batch_size = valid, batch_size

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def set_grad_checkpointing(self) -> None:
        """transformers' activation checkpointing (non-reentrant) in every layer of the model."""
        from mmssl.models.tower import set_activation_checkpointing

        set_activation_checkpointing(self.model)

    @property
    def has_validation(self) -> bool:
        return self.valid is not None

    def evaluate(self) -> dict[str, float]:
        return self.score(self.valid, self.eval_batch_size)

    def save_pretrained(self, path) -> None:
        """The model and its tokenizer, one ``save_pretrained`` directory, written atomically."""
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

    def load_pretrained_state(self, path) -> None:
        saved = type(self.model).from_pretrained(path, use_safetensors=True)
        self.model.load_state_dict(saved.state_dict())

    def _logits_and_targets(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(M, V) logits and (M,) target ids of the predicted tokens."""
        raise NotImplementedError

    def _loss_sum(self, batch: dict) -> tuple[Tensor, Tensor, int]:
        """(summed token loss, number of correct predictions, number of predicted tokens)."""
        logits, targets = self._logits_and_targets(batch)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        return loss, (logits.argmax(-1) == targets).sum(), targets.numel()

    @torch.no_grad()
    def score(self, blocks: PackedBlocks, batch_size: int = 32) -> dict[str, float]:
        """Perplexity (exp of the mean token loss), the loss and the top-1 accuracy of the predicted
        tokens over ``blocks``, in eval mode (no dropout)."""
        total, correct, count = 0.0, 0, 0
        with torch.random.fork_rng(devices=[]), eval_mode(self.model):
            torch.manual_seed(VALID_MASK_SEED)
            for start in range(0, len(blocks), batch_size):
                batch = self._make_batch(blocks, torch.arange(start, min(start + batch_size, len(blocks))))
                loss_sum, hits, n = self._loss_sum(batch)
                total, correct, count = total + float(loss_sum), correct + int(hits), count + n
        mean = total / max(count, 1)
        return {
            "perplexity": math.exp(min(mean, 50.0)),
            "loss": mean,
            "accuracy": correct / max(count, 1),
            "tokens": count,
        }

    def batch(self, indices: Tensor) -> dict:
        return self._make_batch(self.data, indices)

    def _make_batch(self, blocks: PackedBlocks, indices: Tensor) -> dict:
        raise NotImplementedError


def _mlm_head(model: nn.Module) -> nn.Module | None:
    """The prediction head of a ``*ForMaskedLM`` (transform + decoder), applied to any (..., H)."""
    for name in ("lm_head", "cls"):  # RoBERTa-family, BERT-family
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


class MLMTask(_LMTask):
    """Masked language modelling: predict the masked tokens of each block from both sides.

    The head runs on the M masked positions only (about 0.15 B T rows instead of B T): the
    vocabulary projection is most of a small model's cost, and ``*ForMaskedLM.forward`` computes it at
    every position. The loss equals ``model(input_ids, labels=labels).loss`` (tested).
    """

    loss_name = "masked-LM loss"

    def __init__(self, model, tokenizer, data: PackedBlocks, masker: Masker, valid=None, batch_size: int = 32) -> None:
        super().__init__(model, tokenizer, data, valid, batch_size)
        self.masker = masker
        self.head = _mlm_head(model)

    def _make_batch(self, blocks: PackedBlocks, indices: Tensor) -> dict:
        inputs, labels = self.masker(blocks.subset(indices))  # (B, T), (B, T)
        return {"input_ids": inputs.to(self.device), "labels": labels.to(self.device)}

    def _logits_and_targets(self, batch: dict) -> tuple[Tensor, Tensor]:
        labels = batch["labels"]  # (B, T), -100 where not masked
        if self.head is None:
            logits = self.model(input_ids=batch["input_ids"]).logits  # (B, T, V)
            sel = labels != -100
            return logits[sel], labels[sel]
        hidden = self.model.base_model(input_ids=batch["input_ids"]).last_hidden_state  # (B, T, H)
        sel = labels != -100
        return self.head(hidden[sel]), labels[sel]  # (M, V), (M,)

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        logits, targets = self._logits_and_targets(batch)
        if targets.numel() == 0:  # nothing masked in this batch (tiny blocks): a zero loss with a graph
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits.float(), targets)
        return {"mlm_loss": loss}, {"mask_rate": targets.numel() / batch["labels"].numel()}


class CLMTask(_LMTask):
    """Causal language modelling: predict every token of a block from the tokens before it."""

    loss_name = "causal-LM loss"

    def _make_batch(self, blocks: PackedBlocks, indices: Tensor) -> dict:
        return {"input_ids": blocks.input_ids[indices].to(self.device)}  # (B, T)

    def _logits_and_targets(self, batch: dict) -> tuple[Tensor, Tensor]:
        ids = batch["input_ids"]
        logits = self.model(input_ids=ids).logits  # (B, T, V)
        return logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()  # (B (T-1), V), (B (T-1),)

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        logits, targets = self._logits_and_targets(batch)
        return {"clm_loss": F.cross_entropy(logits.float(), targets)}, {}
