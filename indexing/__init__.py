"""FAISS indexes of embeddings with their metadata: embed, build, persist, load, search, update.

FAISS and bm25s are imported when a function that needs them runs, not by ``import indexing``.
"""

from indexing.build import ArrayShards
from indexing.create import build_index_dir
from indexing.index import Hit, SearchIndex
from indexing.lock import IndexBusyError
from indexing.plan import IndexPlan, choose_index, parse_budget
from indexing.store import IndexDirError, Manifest, MetadataStore
from indexing.update import add_items, remove_items
from mmssl.io import model_fingerprint

__all__ = [
    "ArrayShards",
    "Hit",
    "IndexBusyError",
    "IndexDirError",
    "IndexPlan",
    "Manifest",
    "MetadataStore",
    "SearchIndex",
    "add_items",
    "build_index_dir",
    "choose_index",
    "model_fingerprint",
    "parse_budget",
    "remove_items",
]
