"""What a tab says about its index: the "about this index" panel (``about``: what it holds and how
much of the collection is searchable, licences, the model, the index, how its default mode was
chosen), the warning of a model stopped early (``notice_of``), and the example queries drawn from
the index itself (``example_queries``)."""

from __future__ import annotations

import re
from pathlib import Path

from demo.results import first_line, thumbnail
from demo.search import EXAMPLE_FIELD, LoadedIndex


def model_line(path: str | None) -> str:
    """The index's model as the about panel names it: its folder, and what an ONNX export is."""
    from mmssl.export.onnx_encoder import describe, is_onnx_export

    if not path:
        return "?"
    return f"`{Path(path).name}`" + (f", {describe(path)}" if is_onnx_export(path) else "")


def about(item: LoadedIndex) -> str:
    m = item.index.manifest
    params = ", ".join(f"{k}={v}" for k, v in m.search_params.items()) or "none (exact)"
    recall = m.tuning.get("recall")
    prefix = m.embedding.get("model_dim", m.dim) != m.dim  # a Matryoshka prefix
    card = m.collection
    available = card.get("available")
    of = f" of the collection's {available:,}" if isinstance(available, int) and available > len(item.index) else ""
    lines = [
        f"**{item.name}**: {len(item.index):,}{of} {m.modality or 'item'} items searchable, "
        f"searched with {m.query_modality} queries",
    ]
    if card.get("holds"):
        lines.append(f"- holds: {card['holds']}" + (f" (`{Path(card['data']).name}`)" if card.get("data") else ""))
    licences = card.get("licences")
    if licences:
        listed = licences.items() if isinstance(licences, dict) else [("", licences)]
        lines.append("- licences: " + "; ".join(f"{k}: {v}" if k else str(v) for k, v in listed))
    lines += [
        f"- model: {model_line(m.model_path)} (sha256 {(m.model_sha256 or '?')[:12]}…)",
        f"- index: `{m.factory}` ({m.index_type}), {m.dim}-d inner product"
        + (f" (the first {m.dim} of the model's {m.embedding['model_dim']} dims)" if prefix else "")
        + f", search parameters {params}"
        + (f", tuned recall@10 {recall:.3f}" if recall is not None and m.search_params else ""),
        f"- vectors stored as {stored(m)}",
        f"- lexical side (BM25): {'yes' if m.lexical else 'no'}; built {m.created[:19].replace('T', ' ')}",
    ]
    chosen = m.search_defaults
    if chosen.get("mrr"):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in chosen["mrr"].items())
        lines.append(
            f"- starts in **{item.default_mode}** mode (BM25 weight {item.lexical_weight:g}), chosen on "
            f"{chosen.get('queries', '?')} validation queries ({chosen.get('chosen_on', '?')}); MRR {scores}"
        )
    return "\n".join(lines)


def stored(m) -> str:
    """How the index keeps its vectors, and what an item costs in memory and on disk."""
    from indexing.index import bytes_per_item

    cost = bytes_per_item(m)
    what = {
        "float32": "float32",
        "float16": "float16 (scalar quantizer)",
        "int8": "int8 (scalar quantizer, each dimension's range trained)",
        "binary": f"binary sign codes, the best {m.search_params.get('rescore', '?')} x k candidates rescored "
        "with float32 vectors kept on disk",
    }.get(m.embedding_dtype, m.embedding_dtype)
    disk = f", {cost['disk']:,.0f} on disk" if cost["disk"] else ""
    return f"{what}: {cost['memory']:,.0f} bytes an item in memory{disk}"


def notice_of(item: LoadedIndex) -> str:
    """A warning for the tab when the index's model stopped before the steps it was asked for (its
    ``training.json``, written by the trainer), else ""."""
    from mmssl.engine.trainer import TRAINING_FILE
    from mmssl.io import read_json_object

    model = item.index.manifest.model_path
    path = Path(model) / TRAINING_FILE if model else None
    if path is None or not path.is_file():
        return ""
    try:
        done = read_json_object(path)
        step, asked = int(done["step"]), int(done["max_steps"])
    except (ValueError, KeyError, TypeError):
        return ""
    if step >= asked:
        return ""
    why = done.get("stopped_by", "stopped early")
    return (
        f"⚠️ The model of **{item.name}** was trained {step:,} of its {asked:,} steps ({why}): its results are "
        "weaker than the finished model's would be."
    )


def natural_query(text: str) -> str | None:
    """A docstring's first line as a query someone would type ("Return the number of items."
    → "return the number of items"), or None when it reads like markup or a signature."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not re.fullmatch(r"[A-Z][a-z]+(?: [A-Za-z][a-z'-]*){2,8}\.?", line):
        return None
    return (line[0].lower() + line[1:]).rstrip(".")


def example_queries(item: LoadedIndex, n: int = 4, candidates: int = 200) -> list:
    """Queries for the examples row: the other side of a few indexed pairs (docstrings of indexed
    code, code of indexed docstrings, captions of indexed images, images of indexed captions),
    spread over the index. Text queries for code are docstring lines that read like a query
    (``natural_query``); text queries that find their own item in the first three (dense) come first."""
    query_field = EXAMPLE_FIELD.get(item.pair)
    count = item.index.manifest.count
    spread = candidates if item.pair[0] == "text" else n
    ids = sorted({int(i * count / spread) for i in range(spread)})
    rows = item.index.store.get(ids)
    values = [(i, rows[i][1].get(query_field) if query_field else None) for i in ids if i in rows]
    if item.pair[0] == "image":
        images = [thumbnail(v) for _, v in values if isinstance(v, str)]
        return [im for im in images if im is not None][:n]
    if item.pair[0] == "code":
        return [v[:2000] for _, v in values if isinstance(v, str) and v.strip()][:n]
    lines = [(i, first_line(v)[:200]) for i, v in values if isinstance(v, str) and v.strip()]
    if item.pair[1] == "code":
        found = [(i, q) for i, v in values if isinstance(v, str) and (q := natural_query(v))]
    else:  # captions
        found = lines
    found = list({q: (i, q) for i, q in found}.values())[: 3 * n]  # distinct queries, a few to try
    if not found:
        return [q for _, q in lines][:n]
    with item.lock:
        hits = item.index.search([q for _, q in found], k=3)
    good = [q for (i, q), h in zip(found, hits) if any(x.id == i for x in h)]
    return (good + [q for _, q in found if q not in good])[:n]
