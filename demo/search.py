"""The app's indexes and searches: each index directory opened for the app (``LoadedIndex``,
``open_indexes``: its default mode and BM25 weight from its manifest, the filters its payloads
allow), the tab each query→result pair gets (``TABS``), and one search with its arguments checked
(``run_search``: the function behind every tab and API endpoint, returning the hits, the time the
search took and, when its best score is weak for the index, a note saying so)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.uploads import (
    SearchError,
    open_query_image,
    release_memory,
    upload_path,
)

MAX_K = 100  # the most results one search returns
FIRST_K = 10  # results a search starts with; "more results" adds MORE_K
MORE_K = 10
EVERYTHING = ""  # the filter that keeps every item
# Payload fields the app filters on, and how a value is named in the filter menu.
FILTER_FIELDS = ("origin", "repo")
ORIGINS = {"stdlib": "the standard library", "installed": "installed packages"}
MAX_QUERY_CHARS = {"text": 1_000, "code": 20_000}


@dataclass(frozen=True)
class TabSpec:
    """One query→result direction: its label, API name and how queries and results look."""

    label: str
    api_name: str
    query_kind: str  # text | code | image (upload) — the input component
    result_kind: str  # code | text | image (gallery) — the result renderer
    placeholder: str = ""


TABS: dict[tuple[str, str], TabSpec] = {
    ("text", "code"): TabSpec(
        "text → code", "text_to_code", "text", "code", "describe what the code does, e.g. 'read a csv file'"
    ),
    ("code", "text"): TabSpec("code → text", "code_to_text", "code", "text", "paste a function"),
    ("text", "image"): TabSpec("text → image", "text_to_image", "text", "image", "describe the image, e.g. 'fruit'"),
    ("image", "text"): TabSpec("image → text", "image_to_text", "image", "text", "upload an image"),
}
# The payload field that holds a query for the other side of an indexed pair (example queries).
EXAMPLE_FIELD = {
    ("text", "code"): "docstring",
    ("code", "text"): "code",
    ("text", "image"): "caption",
    ("image", "text"): "path",
}


@dataclass
class LoadedIndex:
    """An index directory opened for the app, with a lock: SQLite, FAISS and torch in one thread at a time."""

    name: str
    path: Path
    index: Any  # indexing.SearchIndex
    lexical_weight: float = 1.0  # BM25's weight in hybrid fusion (dense: 1)
    default_mode: str = "dense"
    filters: list[tuple[str, str]] = field(default_factory=list)  # (menu label, "FIELD=VALUE"), after "everything"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pair(self) -> tuple[str, str]:
        m = self.index.manifest
        return (m.query_modality or "text", m.modality or "code")

    @property
    def filter_menu(self) -> list[tuple[str, str]]:
        """The "search within" menu: everything, then the index's filters."""
        return [("everything", EVERYTHING), *self.filters]

    @property
    def modes(self) -> list[str]:
        text_query = self.pair[0] != "image"
        return ["dense", "lexical", "hybrid"] if self.index.lexical is not None and text_query else ["dense"]


def open_indexes(paths: list[str | Path], lexical_weight: float | None = None) -> dict[str, LoadedIndex]:
    """Each directory loaded and checked (manifest, files, model hash); names must be distinct.

    Each index starts on the mode and BM25 weight chosen on its validation queries (its manifest's
    ``search_defaults``, ``indexing.modes``); else dense, weight 1. ``lexical_weight`` overrides
    every index's weight."""
    if lexical_weight is not None and lexical_weight < 0:
        raise ValueError(f"--lexical-weight {lexical_weight}: must be >= 0")
    from indexing import SearchIndex

    loaded: dict[str, LoadedIndex] = {}
    for p in paths:
        path = Path(p).resolve()
        name = path.name
        if name in loaded:
            raise ValueError(f"two indexes are named {name!r} ({loaded[name].path} and {path}): rename one")
        index = SearchIndex.load(path)
        index.model()  # load (and hash-check) the query model now, not on the first query
        chosen = index.manifest.search_defaults
        weight = lexical_weight if lexical_weight is not None else float(chosen.get("lexical_weight", 1.0))
        item = LoadedIndex(name, path, index, weight, filters=filters_of(index.store))
        if chosen.get("mode") in item.modes:
            item.default_mode = chosen["mode"]
        if item.pair not in TABS:
            raise ValueError(
                f"{path}: {item.pair[0]}→{item.pair[1]} search has no tab yet (supported: "
                + ", ".join(f"{q}→{m}" for q, m in TABS)
                + ")"
            )
        loaded[name] = item
    if not loaded:
        raise ValueError("give at least one --index DIR")
    return loaded


def filters_of(store) -> list[tuple[str, str]]:
    """The filter menu of an index: where its items come from (``origin``), then each package
    (``repo``), largest first, each with its item count; [] when its payloads have neither."""
    out = []
    for key in FILTER_FIELDS:
        counts = store.value_counts(key)
        if len(counts) < 2:
            continue  # one value filters nothing out
        for value, n in counts.items():
            name = ORIGINS.get(value, value) if key == "origin" else f"package {value}"
            out.append((f"{name} ({n:,})", f"{key}={value}"))
    return out


def check_within(item: LoadedIndex, within) -> dict | None:
    """``within`` ("FIELD=VALUE" from the index's filter menu, or "" for everything) as a ``where``."""
    if within in (None, EVERYTHING):
        return None
    if not isinstance(within, str) or within not in {value for _, value in item.filters}:
        offered = ", ".join(value for _, value in item.filters[:8]) + (", ..." if len(item.filters) > 8 else "")
        raise SearchError(f"within {str(within)[:80]!r}: {item.name} offers {offered or 'no filter'}")
    key, _, value = within.partition("=")
    return {key: value}


def check_query(query, kind: str):
    if kind == "image":
        return open_query_image(upload_path(query))
    if not isinstance(query, str) or not query.strip():
        raise SearchError("type a query first")
    limit = MAX_QUERY_CHARS[kind]
    if len(query) > limit:
        raise SearchError(f"the query has {len(query):,} characters; the limit is {limit:,}")
    return query


def run_search(
    indexes: dict[str, LoadedIndex], spec: TabSpec, query, index_name: str, k: int, mode: str, within: str = EVERYTHING
) -> dict:
    """One search: {"hits": JSON-ready dicts (rank, id, score, text, payload), "took_ms": the search's
    milliseconds (the query embedded and searched), "note": a weak-match warning or ""}. ``within``:
    one of the index's filters (``filters_of``). The cheap arguments are checked first, the query
    (an image is decoded) last."""
    from indexing.modes import weak_note

    item = indexes.get(index_name) if isinstance(index_name, str) else None
    if item is None or TABS.get(item.pair) != spec:
        raise SearchError(f"no {spec.label} index named {index_name!r}")
    try:
        whole = float(k).is_integer() and not isinstance(k, bool)
        k = int(k)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise SearchError(f"k must be a whole number, got {str(k)[:40]!r}")
    if not 1 <= k <= MAX_K:
        raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in item.modes:
        raise SearchError(f"mode {mode!r}: this index offers {', '.join(item.modes)}")
    where = check_within(item, within)
    try:
        query = check_query(query, spec.query_kind)
        with item.lock:
            start = time.perf_counter()
            hits = item.index.search([query], k=k, mode=mode, lexical_weight=item.lexical_weight, where=where)[0]
            took = (time.perf_counter() - start) * 1000
    finally:
        if spec.query_kind == "image":
            query = None
            release_memory()  # the decoded query image is gone by now
    top = hits[0].score if hits else None
    note = weak_note(item.index.manifest.search_defaults, mode, item.lexical_weight, top)
    return {"hits": [api_hit(h.to_dict()) for h in hits], "took_ms": round(took, 1), "note": note}


def api_hit(hit: dict) -> dict:
    """A hit as the API returns it. The payload's ``path`` goes out as ``file_path``: gradio_client
    takes any dict with a string ``path`` for a file to download, and the app serves no files."""
    payload = dict(hit["payload"])
    if "path" in payload:
        payload["file_path"] = payload.pop("path")
    return {**hit, "payload": payload}
