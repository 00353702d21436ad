"""Contrastive and self-supervised losses: one ``nn.Module`` per loss, tensors in, tensor out.

Modules: ``contrastive`` (InfoNCE, NT-Xent, SigLIP), ``matryoshka`` (a pair loss over nested
prefixes), ``metric`` (pair-contrastive, triplet, N-pair, lifted structured, soft nearest
neighbours, NCE), ``noncontrastive`` (BYOL, Barlow Twins, VICReg). The docstring of every loss
gives its formula, its paper and its input shapes.

Conventions
- Losses never see the model or an argument namespace. Inputs are embeddings (and labels or pair
  ids where the loss needs them); outputs a scalar tensor, or a dict whose keys end in ``_loss``
  when ``output_dict=True`` (the engine sums those keys, as open_clip's ``ClipLoss`` does).
- ``logit_scale`` is the multiplier of the similarities, ``1 / temperature``, as open_clip passes
  it (``model.logit_scale.exp()``). A loss built with ``learn_temperature=True`` owns a learnable
  ``log_logit_scale`` that is used when the caller passes no ``logit_scale``.
- Everything that takes an exponential goes through ``logsumexp``/``cross_entropy``/``logsigmoid``,
  so no temperature in [1e-4, 1e4] gives inf or NaN (``tests/losses/test_loss_properties.py`` checks the extremes).
- Distributed: losses whose negatives come from the batch (InfoNCE, NT-Xent, SigLIP, Barlow
  Twins, VICReg) gather the global batch from every rank with ``mmssl.distributed.
  all_gather_with_grad``. Each rank's input gradient is then ``world_size`` times the gradient of
  the single-process loss over the global batch, which DDP's averaging turns into exactly that
  gradient for the parameters.
"""

from mmssl.losses._common import MAX_LOGIT_SCALE
from mmssl.losses.contrastive import InfoNCELoss, NTXentLoss, SigLIPLoss
from mmssl.losses.matryoshka import MatryoshkaLoss
from mmssl.losses.metric import (
    LiftedStructuredLoss,
    NCELoss,
    NPairLoss,
    PairContrastiveLoss,
    SoftNearestNeighborLoss,
    TripletLoss,
    mine_triplets,
    pairwise_distance,
)
from mmssl.losses.noncontrastive import BarlowTwinsLoss, BYOLLoss, VICRegLoss

__all__ = [
    "MAX_LOGIT_SCALE",
    "MatryoshkaLoss",
    "BYOLLoss",
    "BarlowTwinsLoss",
    "InfoNCELoss",
    "LiftedStructuredLoss",
    "NCELoss",
    "NPairLoss",
    "NTXentLoss",
    "PairContrastiveLoss",
    "SigLIPLoss",
    "SoftNearestNeighborLoss",
    "TripletLoss",
    "VICRegLoss",
    "mine_triplets",
    "pairwise_distance",
]
