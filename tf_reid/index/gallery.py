"""A searchable gallery: a faiss index of embeddings plus each item's path, pid and camid.

`build` trains (PCA, IVF, PQ: on a sample of the gallery) and adds the embeddings in chunks;
`search` answers [Q, D] queries in batches with Euclidean distances (smaller is better, as in
`tf_reid.evaluation`); `save` / `load` keep it in a folder:

  index.faiss    the faiss index (PCA pre-transform included when there is one)
  metadata.npz   paths [N] str, pids [N] int64, camids [N] int64 (loads without pickle)
  index.json     {"format_version", "kind", "dim", "metric": "euclidean", "params",
                  "pca_dim", "count", "faiss_version", "sha256": {file: hex digest}}

`load` checks both files against their sha256 first: a flipped byte in index.faiss would
otherwise change results without an error. The folder is written under a temporary name beside
it and renamed into place (`tfrecords_builder.atomic.folder`), so a failed build or save leaves
nothing behind, and an existing folder is only replaced when asked, and only if it is an index.

Distances are sqrt of faiss's squared L2. With `pca_dim` they are measured in the reduced space;
with "ivfpq" they come from the compressed codes, so both only approximate the true distance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import faiss
import numpy as np
from tqdm import tqdm

from tf_reid.index.kinds import (KINDS, SEARCH_PARAMS, IndexInputError, apply_search_params,
                                 resolve_params)
from tfrecords_builder import atomic

FORMAT_VERSION = 2  # 2: index.json holds the sha256 of the other two files
METRIC = "euclidean"
INDEX_FILE, METADATA_FILE, INFO_FILE = "index.faiss", "metadata.npz", "index.json"
CHECKED_FILES = (INDEX_FILE, METADATA_FILE)
KIND = "index"  # the folder's marker (`atomic.check_target`)


@dataclasses.dataclass(frozen=True, eq=False)
class Metadata:
    """What a search returns about each gallery item (N items, index order).

    Attributes:
      paths: [N] str image paths ("" when unknown).
      pids: [N] int64 identities (-1 when unknown).
      camids: [N] int64 camera ids (-1 when unknown).
    """

    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray

    def __post_init__(self):
        n = len(self.paths)
        for name in ("paths", "pids", "camids"):
            if getattr(self, name).shape != (n,):
                raise IndexInputError(f"metadata {name} must have shape ({n},), got "
                                      f"{getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def unknown(cls, n: int) -> Metadata:
        """N items with no path, pid or camid."""
        return cls(np.full(n, "", dtype=str), np.full(n, -1, np.int64), np.full(n, -1, np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class GalleryIndex:
    """A built index and what describes it.

    Attributes:
      index: faiss index over squared L2 of [*, dim] float32 inputs (PCA inside when pca_dim).
      kind: a key of `tf_reid.index.kinds.KINDS`.
      params: the kind's parameters, defaults filled in (query-time ones are the defaults of
        `search`).
      dim: input embedding dimension D.
      pca_dim: dimension after PCA, or None.
      metadata: per-item paths, pids, camids (len = index.ntotal).
      cache: what a kind's own search derives from the index once (e.g. the bfloat16 copy).
    """

    index: faiss.Index
    kind: str
    params: dict[str, Any]
    dim: int
    pca_dim: int | None
    metadata: Metadata
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def info(self) -> dict[str, Any]:
        """The index.json contents."""
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim,
                "metric": METRIC, "params": self.params, "pca_dim": self.pca_dim,
                "count": len(self), "faiss_version": faiss.__version__}


def _check_embeddings(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise IndexInputError(f"{what} must be a non-empty [N, D] array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise IndexInputError(f"{what} are {x.shape[1]}-d but the index is {dim}-d")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_finite(chunk: np.ndarray, rows: np.ndarray | range, what: str = "gallery") -> None:
    """Raises for the first row of `chunk` (row numbers `rows` of `what`) holding NaN or inf."""
    bad = ~np.isfinite(chunk).all(axis=1)
    if bad.any():
        raise IndexInputError(f"{what} embeddings row {rows[int(np.argmax(bad))]} is not "
                              f"finite (NaN/inf)")


def _chunks(n: int, size: int) -> range:
    if size < 1:
        raise IndexInputError(f"chunk/batch size must be positive, got {size}")
    return range(0, n, size)


def build(embeddings: np.ndarray, metadata: Metadata | None = None, kind: str = "exact",
          params: dict[str, Any] | None = None, pca_dim: int | None = None,
          train_size: int | None = 100_000, chunk: int = 65_536, seed: int = 0,
          progress: bool = True) -> GalleryIndex:
    """Builds an index of gallery embeddings.

    Args:
      embeddings: [N, D] float32 gallery embeddings (L2-normalised for cosine ranking).
      metadata: per-item paths, pids, camids (default: unknown).
      kind: a key of `KINDS`.
      params: the kind's parameters (`kinds.kind_defaults(kind)` for the rest).
      pca_dim: reduce to this many dimensions with a PCA learned on the gallery (applied to
        gallery and queries alike); None keeps D.
      train_size: gallery items sampled (seeded) to train PCA / IVF / PQ; None = all.
      chunk: items added per call (progress granularity).
      seed: sampling seed.
      progress: show a tqdm bar on stderr when it is a terminal.

    Returns:
      The index, holding the N items in `embeddings` order.

    Raises:
      IndexInputError: bad shapes, parameters or non-finite rows.
    """
    embeddings = _check_embeddings(embeddings, "gallery embeddings")
    n, dim = embeddings.shape
    metadata = Metadata.unknown(n) if metadata is None else metadata
    if len(metadata) != n:
        raise IndexInputError(f"{len(metadata)} metadata items for {n} embeddings")
    if pca_dim is not None and not 1 <= pca_dim <= dim:
        raise IndexInputError(f"pca_dim must be in 1..{dim}, got {pca_dim}")
    inner_dim = pca_dim or dim
    params = resolve_params(kind, params, n, inner_dim)
    index = KINDS[kind](inner_dim, n, **params)
    if pca_dim is not None:
        index = faiss.IndexPreTransform(faiss.PCAMatrix(dim, pca_dim, 0.0, False), index)
    if not index.is_trained:
        count = n if train_size is None else min(n, train_size)
        if params.get("nlist", 0) > count:
            raise IndexInputError(f"nlist={params['nlist']} needs at least as many training "
                                  f"items, got train_size {count}")
        rows = np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
        sample = embeddings[rows]
        _check_finite(sample, rows)
        index.train(sample)
    with tqdm(total=n, desc=f"add ({kind})", unit="item", disable=None if progress else True,
              leave=False) as bar:
        for start in _chunks(n, chunk):
            part = embeddings[start:start + chunk]
            _check_finite(part, range(start, start + len(part)))
            index.add(part)
            bar.update(len(part))
    return GalleryIndex(index, kind, params, dim, pca_dim, metadata)


def search(index: GalleryIndex, queries: np.ndarray, k: int, batch: int = 1024,
           search_params: dict[str, Any] | None = None,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery items of every query.

    Args:
      index: a built or loaded index.
      queries: [Q, D] float32 query embeddings (normalised as the gallery was).
      k: hits per query, 1 <= k <= len(index).
      batch: queries per faiss call.
      search_params: query-time overrides (`kinds.SEARCH_PARAMS` the kind has, e.g. nprobe).
      progress: show a tqdm bar.

    Returns:
      ([Q, k] float32 Euclidean distances ascending, [Q, k] int64 gallery indices; -1 where an
      approximate index found fewer than k items).

    Raises:
      IndexInputError: wrong dimension, a query that is not finite, k out of range, unknown
        parameter.

    The query-time parameters are set on the shared faiss index for the call, so concurrent
    searches of one index must use the same ones.
    """
    queries = _check_embeddings(queries, "queries", index.dim)
    _check_finite(queries, range(len(queries)), "query")  # faiss returns no hits for them
    if not 1 <= k <= len(index):
        raise IndexInputError(f"k={k} must be in 1..{len(index)} (the items in the index)")
    overrides = search_params or {}
    unknown = sorted(set(overrides) - (set(SEARCH_PARAMS) & set(index.params)))
    if unknown:
        raise IndexInputError(f"{index.kind} has no query-time parameter {unknown}; it has "
                              f"{sorted(set(SEARCH_PARAMS) & set(index.params)) or 'none'}")
    params = {**index.params, **overrides}
    apply_search_params(index.index, index.kind, params)
    searcher = SEARCHERS.get(index.kind, _faiss_search)
    q = queries.shape[0]
    distances = np.empty((q, k), np.float32)
    indices = np.empty((q, k), np.int64)
    with tqdm(total=q, desc="search", unit="query", disable=None if progress else True,
              leave=False) as bar:
        for start in _chunks(q, batch):
            d, i = searcher(index.index, index.cache, queries[start:start + batch], k, params)
            distances[start:start + batch] = np.sqrt(np.maximum(d, 0))
            indices[start:start + batch] = i
            bar.update(len(i))
    # faiss pads missing hits with distance +max float and index -1.
    distances[indices < 0] = np.inf
    return distances, indices


def _faiss_search(index: faiss.Index, cache: dict[str, Any], queries: np.ndarray, k: int,
                  params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """faiss's own search (query-time parameters already set on `index`)."""
    del cache, params
    return index.search(queries, k)


def _bf16_search(index: faiss.Index, cache: dict[str, Any], queries: np.ndarray, k: int,
                 params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """`tf_reid.index.bf16.search_index`, imported on first use (it needs TensorFlow)."""
    from tf_reid.index import bf16

    return bf16.search_index(index, cache, queries, k, params)


# Kinds searched by our code instead of faiss's: kind -> searcher(faiss index, cache, [Q, D]
# queries, k, params) -> ([Q, k] squared distances, [Q, k] indices).
SEARCHERS = {"exact_bf16": _bf16_search}


@dataclasses.dataclass(frozen=True, eq=False)
class Hits:
    """Metadata of search hits, each field [Q, k] ("" / -1 where there is no hit)."""

    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray


def hits(index: GalleryIndex, indices: np.ndarray) -> Hits:
    """The metadata of `search`'s [Q, k] indices."""
    valid = indices >= 0
    safe = np.where(valid, indices, 0)
    m = index.metadata
    return Hits(np.where(valid, m.paths[safe], ""), np.where(valid, m.pids[safe], -1),
                np.where(valid, m.camids[safe], -1))


@contextlib.contextmanager
def atomic_folder(folder: str, overwrite: bool = False,
                  inputs: Sequence[str] = ()) -> Iterator[str]:
    """`atomic.folder(folder)` of an index, checked before the block runs.

    Raises:
      atomic.OutputError: `folder` exists and either not `overwrite` or not an earlier index
        folder, or it is or holds one of `inputs`.
    """
    folder = os.path.normpath(folder)
    atomic.check_target(folder, overwrite, inputs, KIND)
    with atomic.folder(folder, kind=KIND) as partial:
        yield partial


def write_files(index: GalleryIndex, folder: str) -> None:
    """Writes the index's three files into an existing (temporary) folder."""
    faiss.write_index(index.index, os.path.join(folder, INDEX_FILE))
    m = index.metadata
    with open(os.path.join(folder, METADATA_FILE), "wb") as f:
        np.savez(f, paths=m.paths.astype(str), pids=m.pids.astype(np.int64),
                 camids=m.camids.astype(np.int64))
    info = index.info()
    info["sha256"] = {name: atomic.sha256_file(os.path.join(folder, name))
                      for name in CHECKED_FILES}
    with open(os.path.join(folder, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")


def save(index: GalleryIndex, folder: str, overwrite: bool = False) -> None:
    """Writes `index` to `folder` atomically (see the module docstring for the layout)."""
    with atomic_folder(folder, overwrite) as partial:
        write_files(index, partial)


def _read_info(path: str) -> dict[str, Any]:
    """index.json, checked for this format version."""
    try:
        with open(path) as f:
            info = json.load(f)
    except ValueError as e:
        raise IndexInputError(f"{path}: not JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION or \
            info.get("kind") not in KINDS or not isinstance(info.get("sha256"), dict):
        version = info.get("format_version") if isinstance(info, dict) else None
        raise IndexInputError(f"{path}: not an index of format_version {FORMAT_VERSION} "
                              f"(found {version}; rebuild it with tools.build_index)")
    return info


def load(folder: str) -> GalleryIndex:
    """An index as `save` wrote it.

    Raises:
      IndexInputError: a file is missing, damaged (its sha256 differs from index.json's), or
        the files disagree.
    """
    paths = {name: os.path.join(folder, name) for name in (INDEX_FILE, METADATA_FILE, INFO_FILE)}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise IndexInputError(f"{folder}: not an index folder (missing {missing[0]})")
    info = _read_info(paths[INFO_FILE])
    for name in CHECKED_FILES:
        if atomic.sha256_file(paths[name]) != info["sha256"].get(name):
            raise IndexInputError(f"{paths[name]}: sha256 differs from {INFO_FILE}'s (the file "
                                  "is damaged or was changed; rebuild the index)")
    try:
        with np.load(paths[METADATA_FILE], allow_pickle=False) as data:
            metadata = Metadata(data["paths"], data["pids"], data["camids"])
        index = faiss.read_index(paths[INDEX_FILE])
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # faiss raises RuntimeError
        raise IndexInputError(f"{folder}: cannot read the index ({str(e).splitlines()[0]})") \
            from None
    if not index.ntotal == info["count"] == len(metadata) or index.d != info["dim"]:
        raise IndexInputError(f"{folder}: index.json says {info['count']} items of dim "
                              f"{info['dim']}, the files hold {index.ntotal} of dim {index.d} "
                              f"and {len(metadata)} metadata rows")
    return GalleryIndex(index, info["kind"], info["params"], info["dim"], info["pca_dim"],
                        metadata)
