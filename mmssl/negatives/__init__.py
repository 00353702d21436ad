"""Hard negatives for a dual encoder's training pairs.

``table``    ``MiningSettings`` and ``NegativeTable``: the kept negatives, their sampling into
             batches, their JSON-lines file and checkpoint form.
``mine``     ``mine_negatives``: retrieval (the model, BM25 or both) and the rules that drop likely
             false negatives.
``refresh``  ``NegativeRefresher`` (ANCE: re-mining during training) and ``negatives_for`` (what a
             training run gets from its hard-negative options).
``commands`` ``mmssl mine-negatives`` (``MineNegativesConfig``, ``main``); not imported here, so
             that importing the package stays light.
"""

from mmssl.negatives.mine import mine_negatives
from mmssl.negatives.refresh import NegativeRefresher, negatives_for
from mmssl.negatives.table import MiningSettings, NegativeTable

__all__ = ["MiningSettings", "NegativeRefresher", "NegativeTable", "mine_negatives", "negatives_for"]
