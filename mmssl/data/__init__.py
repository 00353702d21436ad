"""Data: corpora on disk and the readers and miners that produce them.

``code_search``: the CodeSearchNet JSON Lines format (read, validate, write); ``hub``: the same
corpora through ``datasets.load_dataset``, local or from the hub.
``mine``: (docstring, function) pairs mined from Python source trees; ``mmssl data mine-code``.
Importing this package imports neither ``datasets`` nor ``torch``.
"""

from mmssl.data.code_search import (
    CODE_SEARCH_FIELDS,
    CodeSearchCorpus,
    CorpusStats,
    DataError,
    read_code_search,
    write_code_search,
)
from mmssl.data.commands import MineCodeConfig
from mmssl.data.hub import load_code_search_dataset
from mmssl.data.mine import MineStats, mine_python

__all__ = [
    "CODE_SEARCH_FIELDS",
    "CodeSearchCorpus",
    "CorpusStats",
    "DataError",
    "MineCodeConfig",
    "MineStats",
    "load_code_search_dataset",
    "mine_python",
    "read_code_search",
    "write_code_search",
]
