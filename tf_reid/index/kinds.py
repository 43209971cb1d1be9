"""The index kinds: each builds an empty faiss index over squared Euclidean (L2) distance.

`KINDS` maps a kind's name to its factory `factory(dim, num_items, **params) -> faiss.Index`;
the factory's keyword arguments are the kind's parameters and their defaults
(`kind_defaults`). Parameters named in `SEARCH_PARAMS` only steer queries: they can be changed
at query time without rebuilding.

Metric: faiss METRIC_L2 for every kind. On L2-normalised embeddings ||q - g||^2 = 2 - 2 q.g, so
the ranking is the cosine / inner-product ranking; L2 is kept because it also survives the
optional PCA (which centres the data, and centring changes inner products but not distances)
and because `tf_reid.evaluation` ranks by Euclidean distance (smaller is better).

References: HNSW, Malkov & Yashunin, TPAMI 2018 (arXiv:1603.09320); IVF and product
quantisation, Jegou et al., TPAMI 2011.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import faiss


class IndexInputError(ValueError):
    """Bad input to build or query an index (shapes, parameters, files)."""


# Query-time parameters: our name -> faiss ParameterSpace name (None: not faiss's; read by our
# own search, `tf_reid.index.bf16`).
SEARCH_PARAMS = {"ef_search": "efSearch", "nprobe": "nprobe", "group": None, "groups": None,
                 "block": None}


def auto_nlist(num_items: int) -> int:
    """IVF cells for a gallery of `num_items`: ~4 sqrt(N), at most N / 39 (faiss wants >= 39
    training points per centroid), at least 1."""
    return max(1, min(int(round(4 * math.sqrt(num_items))), num_items // 39))


def _check_nlist(nlist: int, num_items: int) -> int:
    if nlist < 1 or nlist > num_items:
        raise IndexInputError(f"nlist must be in 1..{num_items} (the gallery size), got {nlist}")
    return nlist


def exact(dim: int, num_items: int) -> faiss.Index:
    """Brute force over every gallery item (faiss IndexFlatL2): exact top-k."""
    del num_items
    return faiss.IndexFlatL2(dim)


def exact_bf16(dim: int, num_items: int, group: int = 40, groups: int = 16,
               block: int = 125_000) -> faiss.Index:
    """Every item scored by a bfloat16 GEMM, the best groups re-ranked in float32
    (`tf_reid.index.bf16`; stored as IndexFlatL2). All its parameters are query-time ones.

    Args:
      group: consecutive items whose best bfloat16 score stands for them.
      groups: groups re-ranked per query (max(groups, k); >= k keeps the bfloat16 top-k).
      block: gallery items per GEMM (memory: batch x block x 2 bytes).
    """
    del num_items
    if min(group, groups, block) < 1:
        raise IndexInputError(f"exact_bf16 needs positive group, groups and block, got "
                              f"group={group}, groups={groups}, block={block}")
    return faiss.IndexFlatL2(dim)


def hnsw(dim: int, num_items: int, m: int = 32, ef_construction: int = 64,
         ef_search: int = 64) -> faiss.Index:
    """Hierarchical navigable small-world graph (IndexHNSWFlat), full vectors kept.

    Args:
      m: graph neighbours per node (memory ~ N x (4 D + 8 m) bytes).
      ef_construction: candidate list while inserting (build time vs graph quality).
      ef_search: candidate list while searching (>= k; latency vs recall).
    """
    del num_items
    if m < 2 or ef_construction < 1 or ef_search < 1:
        raise IndexInputError(f"hnsw needs m >= 2 and positive ef_*, got m={m}, "
                              f"ef_construction={ef_construction}, ef_search={ef_search}")
    index = faiss.IndexHNSWFlat(dim, m)
    index.hnsw.efConstruction = ef_construction
    return index


def ivf(dim: int, num_items: int, nlist: int | None = None, nprobe: int = 16) -> faiss.Index:
    """Inverted file over k-means cells, full vectors kept (IndexIVFFlat).

    Args:
      nlist: k-means cells (default `auto_nlist`).
      nprobe: cells scanned per query (latency vs recall).
    """
    nlist = _check_nlist(auto_nlist(num_items) if nlist is None else nlist, num_items)
    return faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)


def ivfpq(dim: int, num_items: int, nlist: int | None = None, nprobe: int = 16,
          pq_m: int | None = None, pq_bits: int = 8) -> faiss.Index:
    """Inverted file whose residuals are product-quantised (IndexIVFPQ): pq_m x pq_bits bits
    per item instead of 32 D; distances are approximate.

    Args:
      nlist, nprobe: as `ivf`.
      pq_m: sub-quantisers; must divide dim (default dim / 8, i.e. 8-d sub-vectors).
      pq_bits: bits per sub-quantiser code (2^pq_bits centroids each).
    """
    nlist = _check_nlist(auto_nlist(num_items) if nlist is None else nlist, num_items)
    pq_m = max(1, dim // 8) if pq_m is None else pq_m
    if pq_m < 1 or dim % pq_m:
        raise IndexInputError(f"pq_m must divide the dimension {dim}, got {pq_m}")
    if not 1 <= pq_bits <= 16 or num_items < 2 ** pq_bits:
        raise IndexInputError(f"pq_bits must be in 1..16 with 2^pq_bits <= {num_items} (the "
                              f"gallery size), got {pq_bits}")
    return faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, pq_m, pq_bits)


KINDS: dict[str, Callable[..., faiss.Index]] = {
    "exact": exact,
    "exact_bf16": exact_bf16,
    "hnsw": hnsw,
    "ivf": ivf,
    "ivfpq": ivfpq,
}


def kind_defaults(kind: str) -> dict[str, Any]:
    """{parameter: default} of a kind's factory."""
    signature = inspect.signature(KINDS[kind])
    return {name: p.default for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty}


def resolve_params(kind: str, params: dict[str, Any] | None, num_items: int,
                   dim: int) -> dict[str, Any]:
    """The kind's defaults updated with `params`, data-dependent defaults (None) filled in.

    Raises:
      IndexInputError: an unknown kind or parameter.
    """
    if kind not in KINDS:
        raise IndexInputError(f"unknown index kind {kind!r}; choose from {sorted(KINDS)}")
    defaults = kind_defaults(kind)
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise IndexInputError(f"{kind} takes parameters {sorted(defaults) or 'none'}, got "
                              f"{unknown}")
    resolved = {**defaults, **(params or {})}
    if "nlist" in resolved and resolved["nlist"] is None:
        resolved["nlist"] = auto_nlist(num_items)
    if "pq_m" in resolved and resolved["pq_m"] is None:
        resolved["pq_m"] = max(1, dim // 8)
    return resolved


def parse_params(items: Sequence[str]) -> dict[str, int]:
    """["nlist=1024", "nprobe=16"] (a CLI's list) -> {"nlist": 1024, "nprobe": 16}; all are ints."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep:
            raise IndexInputError(f"parameter {item!r} is not name=integer")
    return params


def apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Sets the query-time parameters among `params` on `index` (through any pre-transform)."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if name in SEARCH_PARAMS and name in kind_defaults(kind):
            if int(value) < 1:
                raise IndexInputError(f"{name} must be positive, got {value}")
            if SEARCH_PARAMS[name] is not None:
                space.set_index_parameter(index, SEARCH_PARAMS[name], int(value))
