"""``CodePairsRecipe`` (``--task code-ssl``): the text-code recipe on self-supervised pairs of
unlabeled code (``mmssl.data.code_pairs``), what ``mmssl pretrain contrastive`` trains
(``mmssl.recipes.config.ContrastivePretrainConfig``).

One shared tower is trained by the same engine and InfoNCE loss as ``mmssl train``; one function
in ``--valid-every`` (by a hash of its code) is held out for the validation MRR that keeps the best
model. The output is a dual encoder directory; ``mmssl train --text-init OUT/best`` starts a tower
from it like any other init.
"""

from __future__ import annotations

from mmssl.console import get_logger
from mmssl.data.code_pairs import as_training_pairs, code_pairs, held_out, parse_views
from mmssl.data.code_search import read_code_search
from mmssl.data.pairs import Pairs
from mmssl.recipes.config import CodePairsConfig, PairDataConfig
from mmssl.recipes.text_code import TextCodeRecipe

log = get_logger("recipes")


class CodePairsRecipe(TextCodeRecipe):
    """The text-code recipe on self-supervised pairs (``code_pairs``) of unlabeled code."""

    name = "code-ssl"

    def __init__(self, pairs: CodePairsConfig | None = None) -> None:
        pairs = pairs or CodePairsConfig()
        self.views, self.valid_every = parse_views(pairs.views), pairs.valid_every

    def load_pairs(self, source, partition, data: PairDataConfig | None = None, max_pairs=None) -> Pairs:
        """``partition`` "train": the pairs of every function not held out; "valid": of the held-out ones.
        Records of a labeled corpus's valid or test partition are never read."""
        if partition not in ("train", "valid"):
            raise ValueError(f"self-supervised pairs come in partitions train and valid; got {partition!r}")
        corpus = read_code_search(source, required=("code", "func_name"))
        records = [r for r in corpus.records if r.get("partition", "train") in ("", "train")]
        if not records:
            raise ValueError(f"{source}: no train-partition record (mmssl data mine-code --unlabeled makes them)")
        valid = partition == "valid"
        chosen = [r for r in records if held_out(r["code"], self.valid_every) == valid]
        pairs = code_pairs(chosen, self.views)
        counts = {v: sum(p.view == v for p in pairs) for v in self.views}
        log.info("%s: %d %s records -> pairs %s", source, len(chosen), partition, counts)
        return as_training_pairs(pairs, chosen).sample(max_pairs, seed=0)


RECIPE = CodePairsRecipe()
