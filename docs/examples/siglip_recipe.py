"""A SigLIP image-text recipe: the image-text recipe with the pairwise sigmoid loss.

Train with it: ``mmssl train --task siglip_recipe:RECIPE ...`` (this file's folder on PYTHONPATH).
"""

from torch import nn

from mmssl.losses import SigLIPLoss
from mmssl.recipes import register
from mmssl.recipes.image_text import ImageTextRecipe


class SigLIPObjective(nn.Module):
    """SigLIP with its own learnable scale and bias, called as the contrastive task calls a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.siglip = SigLIPLoss(init_scale=10.0, init_bias=-10.0)

    def forward(self, a, b, logit_scale=None, pair_ids=None, output_dict=False, **negatives):
        if negatives:
            raise ValueError("the SigLIP recipe takes no mined hard negatives")
        return self.siglip(a, b, output_dict=output_dict)  # its own scale, not the model's


class SigLIPImageText(ImageTextRecipe):
    name = "image-text-siglip"

    def loss(self, model) -> nn.Module:
        return SigLIPObjective()


RECIPE = register(SigLIPImageText())
