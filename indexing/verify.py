"""What loading an index directory checks before anything is used (``SearchIndex.load``, and every
writer before it makes a new version). Each failure is an ``IndexDirError`` of one line naming the
file and the field.

On every load (cheap: no file is read whole):
- the manifest's fields have their types and known values (``metric``, ``index_type``,
  ``search_params``, ``modality``, ``query_modality``);
- ``files`` lists every file the index needs (``index.faiss``, ``meta.sqlite``, ``ivf.ondisk`` for
  an on-disk index, each file of ``lexical/`` for a lexical one), and each is there with its size;
- the FAISS index read from ``index.faiss`` has the manifest's dimension, count and metric, is of
  its ``index_type`` and ``embedding_dtype`` (on-disk lists when ``ondisk``) and takes its search
  parameters; a binary index's float vectors and id array have its count and dimension;
- the metadata store holds as many items (with the tombstones) as the index holds vectors (or
  none: an index built from vectors alone), and the lexical index as many as the store.
With ``verify=True`` (``--verify``), also every file's sha256, which reads every byte.

Whether ``modality`` and ``query_modality`` are the model's is checked when the model is loaded
(``SearchIndex.model``): a recipe may name modalities of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from indexing.build import hnsw_of, is_binary, refine_of, try_ivf
from indexing.plan import EMBEDDING_DTYPES, INDEX_TYPES
from indexing.store import (
    INDEX_FILE,
    LEXICAL_DIR,
    MANIFEST,
    META_FILE,
    ONDISK_FILE,
    IndexDirError,
    Manifest,
    MetadataStore,
    sha256_file,
)

INDEX_KINDS = (*(t for t in INDEX_TYPES if t != "auto"), "custom")
DTYPES = tuple(t for t in EMBEDDING_DTYPES if t != "auto")
_MODALITY = re.compile(r"^[a-z][a-z0-9_-]*$")


def _metrics() -> dict[str, int]:
    import faiss

    return {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def check_manifest(root: Path, m: Manifest) -> None:
    """The manifest's fields: types, known values, and ``files`` listing every file the index needs."""
    where = root / MANIFEST

    def bad(name: str, why: str) -> IndexDirError:
        return IndexDirError(f"{where}: field {name!r} {why}")

    if not isinstance(m.count, int) or isinstance(m.count, bool) or m.count < 0:
        raise bad("count", f"must be a non-negative integer, got {m.count!r}")
    if m.metric not in _metrics():
        raise bad("metric", f"is {m.metric!r}; known: {', '.join(_metrics())}")
    if m.index_type not in INDEX_KINDS:
        raise bad("index_type", f"is {m.index_type!r}; known: {', '.join(INDEX_KINDS)}")
    if m.embedding_dtype not in DTYPES:
        raise bad("embedding_dtype", f"is {m.embedding_dtype!r}; known: {', '.join(DTYPES)}")
    if not isinstance(m.search_params, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in m.search_params.items()
    ):
        raise bad("search_params", f"must map parameter names to positive numbers, got {m.search_params!r}")
    for name in ("modality", "query_modality"):
        value = getattr(m, name)
        if value is not None and not (isinstance(value, str) and _MODALITY.match(value)):
            raise bad(name, f"is {value!r}: not a modality name (such as text, code, image)")
    if m.modality is not None and m.modality == m.query_modality:
        raise bad("query_modality", f"is {m.query_modality!r}, the items' modality too")
    if not isinstance(m.ondisk, bool):
        raise bad("ondisk", f"must be true or false, got {m.ondisk!r}")
    needed = [INDEX_FILE, META_FILE] + ([ONDISK_FILE] if m.ondisk else [])
    if m.embedding_dtype == "binary":
        from indexing.binary import IDS_FILE, VECTORS_FILE

        needed += [VECTORS_FILE, IDS_FILE]
    if m.lexical:
        lexical = root / LEXICAL_DIR
        needed.append(f"{LEXICAL_DIR}/ids.npy")
        if lexical.is_dir():
            needed += [str(p.relative_to(root)) for p in sorted(lexical.rglob("*")) if p.is_file()]
    for name in needed:
        if name not in m.files:
            raise bad("files", f"does not list {name} (its size and sha256); the index cannot be checked")


def check_files(root: Path, manifest: Manifest, verify: bool = False) -> None:
    """Every file the manifest lists is present with its size (and, if ``verify``, its sha256)."""
    for name, rec in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise IndexDirError(f"{path}: missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != rec.bytes:
            what = "truncated" if size < rec.bytes else "changed"
            raise IndexDirError(f"{path}: {size} bytes, {MANIFEST} records {rec.bytes} ({what}; rebuild or restore it)")
        if verify and sha256_file(path) != rec.sha256:
            raise IndexDirError(
                f"{path}: sha256 does not match {MANIFEST} (the file is damaged; rebuild or restore it)"
            )


def index_kind(index) -> str:
    """flat | hnsw | ivf_flat | ivf_fastscan | ivf_pq (``indexing.plan``'s kinds), or custom; an exact
    scan or IVF over scalar-quantized or binary codes is flat or ivf_flat (``index_dtype`` says which)."""
    import faiss

    if is_binary(index):
        return index.kind
    if hnsw_of(index) is not None:
        return "hnsw"
    refine = refine_of(index)
    if refine is not None:
        base = faiss.downcast_index(refine.base_index)
        return "ivf_fastscan" if isinstance(base, faiss.IndexIVFPQFastScan) else "custom"
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        if isinstance(ivf, faiss.IndexIVFFlat | faiss.IndexIVFScalarQuantizer):
            return "ivf_flat"
        if isinstance(ivf, faiss.IndexIVFPQ) and not isinstance(ivf, faiss.IndexIVFPQR):
            return "ivf_pq"
        return "custom"
    if isinstance(index, faiss.IndexIDMap2) and isinstance(
        faiss.downcast_index(index.index), faiss.IndexFlat | faiss.IndexScalarQuantizer
    ):
        return "flat"
    return "custom"


def index_dtype(index) -> str:
    """How the index stores vectors (``indexing.plan``'s embedding dtypes): binary, float16 / int8
    (FAISS's scalar quantizer), else float32."""
    import faiss

    if is_binary(index):
        return "binary"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    ivf = try_ivf(index)
    sq = faiss.downcast_index(ivf) if ivf is not None else inner
    if isinstance(sq, faiss.IndexScalarQuantizer | faiss.IndexIVFScalarQuantizer):
        names = {faiss.ScalarQuantizer.QT_fp16: "float16", faiss.ScalarQuantizer.QT_8bit: "int8"}
        return names.get(sq.sq.qtype, "custom")
    return "float32"


def search_parameter_names(index) -> set[str]:
    """The names ``indexing.tune.search_parameters`` sets on this index."""
    import faiss

    if is_binary(index):
        return {"rescore", "nprobe"} if index.ivf is not None else {"rescore"}
    if refine_of(index) is not None:
        return {"nprobe", "k_factor"}
    if faiss.try_extract_index_ivf(index) is not None:
        return {"nprobe"}
    if hnsw_of(index) is not None:
        return {"efSearch"}
    return set()


def check_index(root: Path, m: Manifest, index, store: MetadataStore, lexical=None) -> None:
    """The loaded FAISS index (and store, lexical index) against the manifest."""
    import faiss

    index_file = root / INDEX_FILE
    if index.d != m.dim:
        raise IndexDirError(f"{index_file}: dimension {index.d}, {MANIFEST} says {m.dim}")
    if index.ntotal != m.count:
        raise IndexDirError(f"{index_file}: {index.ntotal} vectors, {MANIFEST} says count {m.count}")
    metric = next((k for k, v in _metrics().items() if v == index.metric_type), f"type {index.metric_type}")
    if metric != m.metric:
        raise IndexDirError(f"{index_file}: metric {metric}, {MANIFEST} says metric {m.metric}")
    kind = index_kind(index)
    if m.index_type != "custom" and kind != m.index_type:
        raise IndexDirError(f"{index_file}: an index of type {kind}, {MANIFEST} says index_type {m.index_type}")
    dtype = index_dtype(index)
    if m.index_type != "custom" and dtype != m.embedding_dtype:
        raise IndexDirError(f"{index_file}: {dtype} vectors, {MANIFEST} says embedding_dtype {m.embedding_dtype}")
    ivf = try_ivf(index)
    ondisk = ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
    if ondisk != m.ondisk:
        lists = "on disk" if ondisk else "in memory"
        raise IndexDirError(f"{index_file}: inverted lists {lists}, {MANIFEST} says ondisk {str(m.ondisk).lower()}")
    names = search_parameter_names(index)
    for name in m.search_params:
        if name not in names:
            takes = ", ".join(sorted(names)) or "none"
            raise IndexDirError(
                f"{root / MANIFEST}: field 'search_params' has {name!r}, which a {kind} index does not take "
                f"(it takes: {takes})"
            )
    rows, removed = store.count(), len(store.tombstones())
    if (rows or removed) and rows + removed != m.count:
        also = f" and {removed} removed" if removed else ""
        raise IndexDirError(f"{store.path}: {rows} items{also}, {MANIFEST} says count {m.count}")
    if lexical is not None and len(lexical) != rows:
        raise IndexDirError(f"{root / LEXICAL_DIR / 'ids.npy'}: {len(lexical)} items, {META_FILE} holds {rows}")
