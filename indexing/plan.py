"""Which FAISS index a collection gets (``choose_index``): the rules of ``indexing.build``'s docstring
from the size, the dimension and a memory budget, as an ``IndexPlan``; memory estimates and budgets.

Two choices are independent: the structure (``index_type``: an exact scan, an inverted file, a
graph, PQ codes) and how each vector is stored (``embedding_dtype``):
    float32   the vectors as they are (D x 4 bytes)
    float16   half precision, FAISS's scalar quantizer ``SQfp16`` (D x 2 bytes)
    int8      FAISS's 8-bit scalar quantizer ``SQ8``, each dimension's range trained on a sample (D bytes)
    binary    the signs, D / 8 bytes, searched by Hamming distance with FAISS (every code, or the
              lists of float centroids), the best candidates rescored with float32 vectors
              memory-mapped from disk (``indexing.binary``)
float16, int8 and binary go with an exact scan (``flat``) or an inverted file (``ivf_flat``); PQ
codes (``ivf_pq``, ``ivf_fastscan``) are a compression of their own. Under a memory budget with
``embedding_dtype="auto"``, the first that fits, best recall first: float32 fast-scan, float32
IVF, float16 IVF, int8 IVF, binary IVF with rescoring, PQ codes, inverted lists on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAT_MAX = 20_000
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf_flat", "ivf_fastscan", "ivf_pq")
EMBEDDING_DTYPES = ("auto", "float32", "float16", "int8", "binary")
SQ_CODES = {"float16": "SQfp16", "int8": "SQ8"}  # FAISS scalar-quantizer factory names


@dataclass(frozen=True)
class IndexPlan:
    """What to build: the FAISS factory string, the kind, and why."""

    index_type: str  # flat | hnsw | ivf_flat | ivf_fastscan | ivf_pq | custom
    factory: str
    nlist: int = 0
    train_size: int = 0
    memory_bytes: int = 0  # estimated resident size of the built index (on-disk: in memory only)
    ondisk: bool = False
    reason: str = ""
    embedding_dtype: str = "float32"  # float32 | float16 | int8 | binary (codes; the module docstring)


def default_nlist(n: int) -> int:
    """A power of two near 2 sqrt(N), with at least 39 training points per list (FAISS's minimum)."""
    nlist = 2 ** round(math.log2(max(2.0 * math.sqrt(n), 16)))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return int(nlist)


def train_size_for(n: int, nlist: int) -> int:
    """64 points per list (k-means quality stops improving around there), at least 50,000."""
    return int(min(n, max(64 * nlist, 50_000)))


def code_bytes(d: int, dtype: str = "float32") -> int:
    """Bytes one vector of dimension D takes stored as ``dtype``."""
    per = {"float32": 4 * d, "float16": 2 * d, "int8": d, "binary": (d + 7) // 8}
    if dtype not in per:
        raise ValueError(f"embedding dtype {dtype!r}: choose one of {', '.join(EMBEDDING_DTYPES)}")
    return per[dtype]


def memory_estimate(
    index_type: str, n: int, d: int, nlist: int = 0, m: int = 0, ondisk: bool = False, dtype: str = "float32"
) -> int:
    """Bytes the index holds in RAM (vectors or codes, ids, centroids), within ~10%. A binary index's
    float vectors for rescoring are on disk, memory-mapped: not counted (a query reads a few rows)."""
    code = code_bytes(d, dtype)
    ids = 8 * n if dtype == "binary" else 16 * n  # binary: an id array; else the id map / IVF id lookup
    if index_type == "flat":
        return n * code + ids
    if index_type == "hnsw":
        return n * (4 * d + 32 * 2 * 4 + 8) + ids  # vectors + 2M neighbour links on level 0 + levels
    centroids = nlist * 4 * d + (4 * d * d if dtype == "binary" and nlist else 0)  # binary IVF: its identity transform
    if ondisk:
        return centroids  # lists and their ids stay on disk (a filtered search adds the id lookup)
    if index_type == "ivf_flat":
        return n * (code + 8) + centroids + ids
    if index_type == "ivf_fastscan":  # 4-bit codes (m/2 bytes) + list ids, exact vectors, id map
        return n * ((m + 1) // 2 + 8 + 4 * d) + centroids + 256 * 4 * d + ids
    if index_type == "ivf_pq":
        return n * (m + 8) + centroids + 256 * 4 * d + ids
    raise ValueError(f"unknown index type {index_type!r}")


def parse_budget(text: str | int | None) -> int | None:
    """'4G', '512M', '2.5GB', plain bytes, or None (no budget)."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in scale:
            return int(float(s[:-1]) * scale[s[-1]])
        return int(float(s))
    except ValueError:
        raise ValueError(f"memory budget {text!r}: use bytes or a size such as 512M, 4G") from None


def fastscan_m(d: int) -> int:
    """Sub-quantizers of the fast-scan codes: one per 2 dimensions (4 bits each), D/4 bytes a vector."""
    return d // 2 if d % 2 == 0 and d >= 4 else d


def _pq_sizes(d: int) -> list[int]:
    """Numbers of 8-bit sub-quantizers that divide D, largest first (FAISS's PQ needs D % m == 0)."""
    return [m for m in range(min(d, 128), 0, -1) if d % m == 0 and d // m <= 32 and m >= 4] or [1]


def choose_index(
    n: int,
    d: int,
    memory_budget: int | None = None,
    *,
    index_type: str = "auto",
    factory: str | None = None,
    opq: bool = False,
    ondisk: bool = False,
    flat_max: int = FLAT_MAX,
    embedding_dtype: str = "auto",
) -> IndexPlan:
    """The index for N vectors of dimension D under a memory budget in bytes (see the module docstring)."""
    if n <= 0:
        raise ValueError("cannot index an empty collection")
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype {embedding_dtype!r}: choose one of {', '.join(EMBEDDING_DTYPES)}")
    nlist = default_nlist(n)
    budget = memory_budget if memory_budget is not None else math.inf
    if factory:
        if embedding_dtype not in ("auto", "float32"):
            raise ValueError("a factory string names its own codes: give --factory or --embedding-dtype, not both")
        return IndexPlan(
            "custom", factory, nlist=0, train_size=min(n, 100_000), ondisk=ondisk, reason="factory string given"
        )
    if ondisk and index_type not in ("auto", "ivf_flat"):
        raise ValueError("on-disk indexes are IVF-Flat here: use --index-type auto or ivf_flat with --ondisk")
    if embedding_dtype not in ("auto", "float32"):
        if ondisk:
            raise ValueError(f"--ondisk with --embedding-dtype {embedding_dtype}: on-disk lists hold float32 vectors")
        if index_type not in ("auto", "flat", "ivf_flat"):
            raise ValueError(
                f"--embedding-dtype {embedding_dtype} goes with --index-type flat or ivf_flat "
                f"({index_type} stores codes of its own)"
            )
        exact = index_type == "flat" or (index_type == "auto" and n <= flat_max)
        return quantized(n, d, embedding_dtype, 0 if exact else nlist, "asked for")

    def ivf_flat(reason: str, on_disk: bool = False) -> IndexPlan:
        mem = memory_estimate("ivf_flat", n, d, nlist, ondisk=on_disk)
        return IndexPlan("ivf_flat", f"IVF{nlist},Flat", nlist, train_size_for(n, nlist), mem, on_disk, reason)

    def ivf_fastscan(reason: str) -> IndexPlan:
        m = fastscan_m(d)
        mem = memory_estimate("ivf_fastscan", n, d, nlist, m)
        factory = f"IVF{nlist},PQ{m}x4fs,RFlat"
        return IndexPlan("ivf_fastscan", factory, nlist, train_size_for(n, nlist), mem, False, reason)

    def ivf_pq(m: int, reason: str) -> IndexPlan:
        pre = f"OPQ{m}," if opq else ""
        mem = memory_estimate("ivf_pq", n, d, nlist, m)
        # "np": no polysemous training. It reorders codes for Hamming-distance filtering, which this
        # layer never uses, and it is most of the training time (4x on a 50k x 64 sample).
        return IndexPlan("ivf_pq", f"{pre}IVF{nlist},PQ{m}np", nlist, train_size_for(n, nlist), mem, False, reason)

    if index_type == "flat":
        return IndexPlan("flat", "Flat", memory_bytes=memory_estimate("flat", n, d), reason="asked for")
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32,Flat", memory_bytes=memory_estimate("hnsw", n, d), reason="asked for")
    if index_type == "ivf_flat":
        return ivf_flat("asked for", on_disk=ondisk)
    if index_type == "ivf_fastscan":
        return ivf_fastscan("asked for")
    if index_type == "ivf_pq":
        fits = [m for m in _pq_sizes(d) if memory_estimate("ivf_pq", n, d, nlist, m) <= budget]
        return ivf_pq(fits[0] if fits else _pq_sizes(d)[-1], "asked for")
    if ondisk:
        return ivf_flat("on-disk asked for", on_disk=True)
    flat_mem = memory_estimate("flat", n, d)
    if n <= flat_max and flat_mem <= budget:
        return IndexPlan("flat", "Flat", memory_bytes=flat_mem, reason=f"N={n:,} <= {flat_max:,}: exact search")
    if memory_estimate("ivf_fastscan", n, d, nlist, fastscan_m(d)) <= budget:
        return ivf_fastscan("exact vectors fit: fast-scan codes pick candidates, exact vectors re-rank them")
    if memory_estimate("ivf_flat", n, d, nlist) <= budget:
        return ivf_flat("exact vectors fit, fast-scan codes beside them do not")
    if embedding_dtype == "auto":  # smaller codes of the same vectors before PQ's lossier ones
        need = memory_estimate("ivf_flat", n, d, nlist) / 2**20
        for dtype in ("float16", "int8", "binary"):
            plan = quantized(n, d, dtype, nlist, f"float32 vectors need {need:,.0f} MiB")
            if plan.memory_bytes <= budget:
                return plan
    for m in _pq_sizes(d):
        if memory_estimate("ivf_pq", n, d, nlist, m) <= budget:
            return ivf_pq(m, f"exact vectors need {memory_estimate('ivf_flat', n, d, nlist) / 2**20:,.0f} MiB")
    return ivf_flat(f"not even PQ codes fit {budget / 2**20:,.0f} MiB: inverted lists on disk", on_disk=True)


def quantized(n: int, d: int, dtype: str, nlist: int, reason: str) -> IndexPlan:
    """An exact scan (``nlist`` 0) or an inverted file over vectors stored as ``dtype``."""
    kind = "ivf_flat" if nlist else "flat"
    if dtype == "binary":  # indexing.binary's factory: a FAISS binary index, and rescoring beside it
        factory = f"IVF{nlist},BinarySign" if nlist else "BFlat"
    else:
        code = SQ_CODES.get(dtype, "Flat")
        factory = f"IVF{nlist},{code}" if nlist else code
    mem = memory_estimate(kind, n, d, nlist, dtype=dtype)
    train = train_size_for(n, nlist) if nlist else min(n, 100_000)  # SQ8: each dimension's range
    return IndexPlan(kind, factory, nlist, train, mem, False, reason, embedding_dtype=dtype)
