"""DeepCluster (Caron et al. 2018, "Deep Clustering for Unsupervised Learning of Visual Features").

``DeepclusterConfig`` (``--clusters``, ``--pca-dim``) and ``Deepcluster``: at the first step and at
every epoch's end (``after_step``) ``recluster`` embeds every training image (no augmentation),
PCA-whitens and clusters the features by FAISS k-means (``indexing.cluster.kmeans``) and resets the
classifier; between, the tower learns to predict its images' clusters (crop + flip views). The
labels are saved with the heads (``_labels``). Validation: the classifier's prediction entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.console import get_logger
from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask, tower_features
from mmssl.pretrain.image_ssl.views import crop_view

log = get_logger("pretrain.image")


@dataclass(frozen=True)
class DeepclusterConfig(ImageSSLConfig):
    """DeepCluster: predict k-means clusters"""

    method: ClassVar[str] = "deepcluster"
    clusters: int = field(default=100, metadata={"help": "deepcluster: k of the k-means"})
    pca_dim: int = field(default=64, metadata={"help": "deepcluster: PCA-whitening dimension before k-means"})


class Deepcluster(ImageSSLTask):
    """``labels``: (N,) cluster of each training image (None until the first clustering)."""

    config_class = DeepclusterConfig

    def __init__(self, config: DeepclusterConfig, tower, train, valid, device) -> None:
        super().__init__(config, tower, train, valid, device)
        self.labels: Tensor | None = None
        self.batches_per_epoch = max(1, len(train) // config.batch_size)

    def view_transforms(self, size: int, mean, std) -> tuple:
        return crop_view(size, mean, std, self.config.crop_min), None

    def heads(self, tower) -> dict[str, nn.Module]:
        return {"classifier": nn.Linear(tower.dim, self.config.clusters)}

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        if self.labels is None:
            self.recluster()
        h = self.model.tower(batch["v1"])
        return self.criterion(self.model.classifier(h), self.labels[batch["index"].to(self.labels.device)]), h

    def _valid_loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        # held-out images: labelled by their nearest training centroid would need the k-means here; the
        # classifier's own confidence (entropy of its prediction) is what is comparable across epochs
        h = self.model.tower(batch["v1"])
        p = F.softmax(self.model.classifier(h), dim=1)
        return -(p * p.clamp_min(1e-12).log()).sum(1).mean(), h

    def after_step(self, step: int) -> bool:
        if step % self.batches_per_epoch == 0:  # an epoch's end
            self.recluster()
        return False

    def recluster(self) -> None:
        """DeepCluster's epoch step: features of every training image, FAISS k-means, new labels,
        a freshly initialized classifier (the old one's classes mean nothing under new labels)."""
        from indexing.cluster import kmeans

        feats = tower_features(self.model.tower, self.data.candidates)  # (N, D)
        result = kmeans(feats, self.config.clusters, pca_dim=self.config.pca_dim, seed=self.config.seed)
        self.labels = torch.from_numpy(result.labels).to(self.device)
        self.model.classifier.reset_parameters()
        log.info(
            "deepcluster: %d clusters, sizes %d..%d (median %d)",
            len(result.sizes),
            int(result.sizes.min()),
            int(result.sizes.max()),
            int(np.median(result.sizes)),
        )

    def extra_heads(self) -> dict[str, Tensor]:
        return {} if self.labels is None else {"_labels": self.labels.cpu()}

    def load_extra_heads(self, extra: dict[str, Tensor]) -> None:
        if "_labels" in extra:
            self.labels = extra["_labels"].to(self.device)
