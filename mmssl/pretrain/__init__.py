"""Self-supervised pretraining: text/code towers by masked LM (BERT-style) and causal LM (GPT-style),
image towers by seven SSL methods.

``corpus``: documents from JSONL fields, text files or ``datasets``, packed into full blocks.
``masking``: what masked-LM pretraining hides together (token, word, identifier, span).
``tasks``: ``MLMTask`` and ``CLMTask`` for the one training engine (``mmssl.engine.Trainer``).
``commands``: ``mmssl pretrain mlm|clm`` (``MLMConfig``, ``CLMConfig``, ``main``) and ``mmssl pretrain
contrastive`` (the ``code-ssl`` recipe of ``mmssl.recipes.code_pairs``). Each output directory
initializes a dual encoder's tower: ``mmssl train --text-init OUT/best``.
``image_ssl``: ``mmssl pretrain simclr|byol|barlow|vicreg|rotation|jigsaw|deepcluster``, self-supervised
image towers (one module per method), for ``mmssl train --task image-text --image-init OUT/best``.
"""

from mmssl.pretrain.corpus import PackedBlocks, load_dataset_documents, pack, read_documents, split_documents
from mmssl.pretrain.tasks import CLMTask, MLMTask

__all__ = [
    "CLMTask",
    "MLMTask",
    "PackedBlocks",
    "load_dataset_documents",
    "pack",
    "read_documents",
    "split_documents",
]
