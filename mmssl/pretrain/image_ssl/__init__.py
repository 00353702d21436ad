"""Self-supervised pretraining of an image tower: ``mmssl pretrain <method>``, seven methods.

Each method trains an open_clip image tower (ViTs, or ResNets such as ``RN50``) or a torchvision one
(``--image-model torchvision:resnet50``) on the one training engine, and ``mmssl train --task
image-text --image-init OUT/best`` then starts from the saved tower. One module per method, each
with its config, views, heads, loss and hooks, on the shared ``base`` (``ImageSSLConfig``,
``ImageSSLTask``, ``mlp``, ``collapse_metrics``, ``tower_features``), ``views`` (augmentations,
``ViewBatcher``) and ``twoview`` (the joint-embedding methods' projector):

- contrastive: ``simclr``; non-contrastive: ``byol``, ``barlow``, ``vicreg``;
- pretext tasks: ``rotation``, ``jigsaw``; feature clustering: ``deepcluster``.

``commands``: ``METHODS`` (name -> task class), ``build_image_ssl(config, device)`` and ``main``.
Output directory (the engine's): ``OUT/best``, ``OUT/final``: the saved tower plus
``ssl_heads.safetensors`` (the heads, the target network, cluster labels) and ``ssl.json``.
"""

from mmssl.pretrain.image_ssl.barlow import Barlow, BarlowConfig
from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask, collapse_metrics, mlp, tower_features
from mmssl.pretrain.image_ssl.byol import BYOL, BYOLConfig
from mmssl.pretrain.image_ssl.commands import METHODS, build_image_ssl, build_tower, main
from mmssl.pretrain.image_ssl.deepcluster import Deepcluster, DeepclusterConfig
from mmssl.pretrain.image_ssl.jigsaw import Jigsaw, JigsawConfig, permutation_set, shuffle_tiles
from mmssl.pretrain.image_ssl.rotation import Rotation, RotationConfig
from mmssl.pretrain.image_ssl.simclr import SimCLR, SimCLRConfig
from mmssl.pretrain.image_ssl.twoview import TwoViewConfig, TwoViewTask
from mmssl.pretrain.image_ssl.vicreg import VICReg, VICRegConfig
from mmssl.pretrain.image_ssl.views import ViewBatcher

__all__ = [
    "BYOL",
    "BYOLConfig",
    "METHODS",
    "Barlow",
    "BarlowConfig",
    "Deepcluster",
    "DeepclusterConfig",
    "ImageSSLConfig",
    "ImageSSLTask",
    "Jigsaw",
    "JigsawConfig",
    "Rotation",
    "RotationConfig",
    "SimCLR",
    "SimCLRConfig",
    "TwoViewConfig",
    "TwoViewTask",
    "VICReg",
    "VICRegConfig",
    "ViewBatcher",
    "build_image_ssl",
    "build_tower",
    "collapse_metrics",
    "main",
    "mlp",
    "permutation_set",
    "shuffle_tiles",
    "tower_features",
]
