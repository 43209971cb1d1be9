"""Dataset-specific evaluation protocols: CUHK03 single-gallery-shot CMC, MARS tracklet pooling
and Market-1501 multi-query pooling.

NumPy in, NumPy out; no TensorFlow. The plain multi-shot protocol lives in `metrics.py`
(`evaluate_rank`); this module holds the protocol quirks that do not fit it, and picks the
protocol a dataset's manifest records: `single_gallery_shot(manifest)` gives the settings of
`evaluate_single_gallery_shot` for CUHK03 converted with `--protocol classic` (None otherwise),
and `score` ranks a distance matrix under those settings or, without them, multi-shot.
`pool_tracklets` and `pool_multi_query` change what is ranked, not how: their output goes
through the same distances and `score`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.evaluation.matching import l2_normalize
from tf_reid.evaluation.metrics import _NO_MATCH, _validate, evaluate_rank

POOLING_METHODS = ("mean", "max")
# The classic CUHK03 evaluation (Li et al. 2014; torchreid's `eval_cuhk03`) averages 10 random
# gallery samplings; a fixed seed makes a run's numbers reproducible and every distance of a
# run scored on the same samples (the draws depend on the matrix shape only).
SINGLE_GALLERY_SHOT_REPEATS = 10
SINGLE_GALLERY_SHOT_SEED = 0
# Key of those settings in a features file's metadata and in eval.json's options; absent under
# the multi-shot protocol.
SINGLE_GALLERY_SHOT_KEY = "single_gallery_shot"

# Queries ranked at once; bounds the [block, num_gallery] working arrays like `evaluate_rank`.
_BLOCK = 256


def _sgs_block(dist, q_pids, q_camids, g_inv, g_camids, group_perm, group_starts, repeats, rng):
    """Single-gallery-shot first-match ranks for a [b, num_gallery] block of distances.

    `g_inv` holds gallery pids relabelled 0..P-1 (and `q_pids` relabelled the same way, -1 when the
    query's pid is not in the gallery); `group_perm` sorts the gallery by that label and
    `group_starts` are the first positions of each label in that order.

    Returns (has_match [b] bool, ranks [repeats, b] int64, 1-based; 0 where there is no match).
    """
    b, num_g = dist.shape
    same_pid = q_pids[:, None] == g_inv[None, :]
    junk = same_pid & (q_camids[:, None] == g_camids[None, :])
    good = same_pid & ~junk
    has = good.any(axis=1)
    rows = np.arange(b)
    cols = np.arange(num_g)
    ranks = np.zeros((repeats, b), dtype=np.int64)
    for r in range(repeats):
        # One uniform draw per gallery item; per (query, pid) the item with the smallest key is
        # that pid's sampled shot, i.e. a uniform pick among its non-junk items.
        keys = rng.random((b, num_g))
        keys[junk] = np.inf
        group_min = np.minimum.reduceat(keys[:, group_perm], group_starts, axis=1)
        chosen = (keys == group_min[:, g_inv]) & np.isfinite(keys)
        match = np.argmax(chosen & good, axis=1)  # the single sampled true match (if any)
        d_match = dist[rows, match][:, None]
        # Stable-sort rank among the sampled items: closer, or equally close and earlier.
        ahead = (dist < d_match) | ((dist == d_match) & (cols[None, :] < match[:, None]))
        ranks[r] = np.where(has, (chosen & ahead).sum(axis=1) + 1, 0)
    return has, ranks


def evaluate_single_gallery_shot(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    repeats: int = 10,
    seed: int = 0,
    return_details: bool = False,
) -> tuple[np.ndarray, float] | dict[str, Any]:
    """CMC and mAP under the CUHK03 classic single-gallery-shot protocol (smaller distance = better).

    Protocol (Li et al., "DeepReID", CVPR 2014; torchreid's `eval_cuhk03`), per query: gallery
    items with the query's pid and camera are junk and removed. Then, `repeats` times, one
    gallery image is sampled uniformly at random for every pid that still has an item, and the
    query is ranked against those sampled images only, so it has exactly one true match. A query
    whose pid has no item left is skipped and left out of every mean.

    CMC: `cmc[k]` is the fraction of (query, repeat) pairs whose match is at rank <= k + 1,
    i.e. the per-query CMC averaged over repeats, then over evaluated queries. When fewer than
    `max_rank` pids are sampled the curve is padded with its last value (1.0).
    AP: with one true match at rank r, AP = 1 / r; it is averaged over repeats, then over
    queries. (torchreid instead reports the AP of the full, unsampled gallery.)
    Ties in distance are broken by gallery index, as in `evaluate_rank`. When every gallery pid
    has a single image, nothing is random and the result equals `evaluate_rank`'s.

    Args:
        distmat: [num_query, num_gallery] distances.
        q_pids: [num_query] query identities.
        g_pids: [num_gallery] gallery identities.
        q_camids: [num_query] query camera ids.
        g_camids: [num_gallery] gallery camera ids.
        max_rank: length of the returned CMC curve.
        repeats: number of random gallery samplings.
        seed: seed of the `numpy.random.Generator` drawing the samples.
        return_details: return a dict instead of (cmc, mAP).

    Returns:
        (cmc [max_rank] float64, mAP float), or with `return_details` a dict with keys "cmc",
        "mAP", "mINP" (with one true match INP = 1 / r = AP, so mINP equals mAP),
        "num_evaluated" and "num_skipped", as `metrics.evaluate_rank` gives them.

    Raises:
        ValueError: on inconsistent shapes or arguments, or when no query has a match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    _validate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, "standard", _BLOCK)
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")

    num_q, num_g = distmat.shape
    if num_g == 0:
        raise ValueError(_NO_MATCH)
    unique_pids, g_inv = np.unique(g_pids, return_inverse=True)
    g_inv = g_inv.reshape(-1)
    pos = np.clip(np.searchsorted(unique_pids, q_pids), 0, len(unique_pids) - 1)
    q_inv = np.where(unique_pids[pos] == q_pids, pos, -1)
    group_perm = np.argsort(g_inv, kind="stable")
    group_starts = np.flatnonzero(np.r_[True, np.diff(g_inv[group_perm]) != 0])

    rng = np.random.default_rng(seed)
    has = np.zeros(num_q, dtype=bool)
    ranks = np.zeros((repeats, num_q), dtype=np.int64)
    for start in range(0, num_q, _BLOCK):
        stop = min(start + _BLOCK, num_q)
        has[start:stop], ranks[:, start:stop] = _sgs_block(
            distmat[start:stop], q_inv[start:stop], q_camids[start:stop], g_inv, g_camids,
            group_perm, group_starts, repeats, rng,
        )

    num_evaluated = int(has.sum())
    if num_evaluated == 0:
        raise ValueError(_NO_MATCH)
    ranks = ranks[:, has]
    counts = np.bincount(np.minimum(ranks.ravel(), max_rank + 1), minlength=max_rank + 2)
    cmc = np.cumsum(counts[1 : max_rank + 1]) / ranks.size
    mean_ap = float((1.0 / ranks).mean())
    if not return_details:
        return cmc, mean_ap
    return {"cmc": cmc, "mAP": mean_ap, "mINP": mean_ap, "num_evaluated": num_evaluated,
            "num_skipped": num_q - num_evaluated}


def single_gallery_shot(manifest: Mapping[str, Any]) -> dict[str, int] | None:
    """The `evaluate_single_gallery_shot` settings ("repeats", "seed") the dataset's protocol
    calls for, or None for the multi-shot protocol of `metrics.evaluate_rank`.

    Only CUHK03 under the classic protocol (`tfrecords_builder.cuhk03`, recorded in the manifest
    as dataset "cuhk03", protocol {"protocol": "classic", ...}) is scored single-gallery-shot.

    Args:
      manifest: a `tools.build_tfrecords` manifest.json, as `tfrecords_builder.manifest.read_manifest` returns it.
    """
    if (manifest.get("dataset") == "cuhk03"
            and manifest.get("protocol", {}).get("protocol") == "classic"):
        return {"repeats": SINGLE_GALLERY_SHOT_REPEATS, "seed": SINGLE_GALLERY_SHOT_SEED}
    return None


def score(distmat: np.ndarray, query: SplitFeatures, gallery: SplitFeatures, max_rank: int,
          single_gallery_shot: Mapping[str, int] | None = None) -> dict[str, Any]:
    """CMC, mAP and mINP of a [Q, G] distance matrix under the dataset's protocol.

    Args:
      distmat: [Q, G] distances (smaller = better), e.g. one of `matching.distances`.
      query, gallery: the features the matrix was computed from (pids and camids are used).
      max_rank: length of the CMC curve.
      single_gallery_shot: settings from `single_gallery_shot(manifest)`; None scores
        multi-shot (`metrics.evaluate_rank`).

    Returns:
      {"cmc": [max_rank] float64, "mAP", "mINP", "num_evaluated", "num_skipped", ...} as
      `evaluate_rank(..., return_details=True)` or `evaluate_single_gallery_shot(...,
      return_details=True)` returns it.
    """
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    if single_gallery_shot is None:
        return evaluate_rank(distmat, *ids, max_rank=max_rank, return_details=True)
    return evaluate_single_gallery_shot(distmat, *ids, max_rank=max_rank,
                                        repeats=single_gallery_shot["repeats"],
                                        seed=single_gallery_shot["seed"], return_details=True)


def pool_tracklets(features: SplitFeatures, method: str = "mean") -> SplitFeatures:
    """One item per tracklet: its frames' features pooled (the MARS video protocol).

    Zheng et al., "MARS: A Video Benchmark for Large-Scale Person Re-identification", ECCV 2016:
    a tracklet is represented by the average (here optionally the element-wise max) of its
    frame features. Global and local features are pooled element-wise. Tracklets come out in
    order of first appearance, each with its pid, camera and first frame's path, and frame -1.

    Args:
      features: frame features of one split (N frames); every frame has a tracklet id (>= 0).
      method: "mean" or "max".

    Returns:
      Features of the T tracklets: global_ [T, D], local [T, h, c] (None if the frames have
      none), pids, camids, paths, tracklets [T], frames [T] all -1. Floating features keep
      their dtype; integer ones are pooled in float64.

    Raises:
      ValueError: an unknown method, a frame with no tracklet (an image dataset), or a
        tracklet whose frames disagree on pid or camid.
    """
    if method not in POOLING_METHODS:
        raise ValueError(f"method must be one of {POOLING_METHODS}, got {method!r}")
    tracklets, pids, camids = features.tracklets, features.pids, features.camids
    if (tracklets < 0).any():
        raise ValueError("tracklet pooling needs video frames; these images have no tracklet "
                         "(tracklet -1)")
    num_frames = len(features)
    if num_frames == 0:
        raise ValueError("no frames to pool")

    _, first, inv = np.unique(tracklets, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    # Relabel tracklets 0..T-1 by first appearance instead of by sorted id.
    appearance = np.argsort(first, kind="stable")
    label = np.empty_like(appearance)
    label[appearance] = np.arange(appearance.size)
    inv = label[inv]
    first = first[appearance]

    for name, arr in (("pid", pids), ("camid", camids)):
        bad = arr != arr[first][inv]
        if bad.any():
            frame = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"tracklet {tracklets[frame].item()!r} has frames with different {name}s "
                f"({arr[first[inv[frame]]].item()!r} and {arr[frame].item()!r})"
            )

    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    sizes = np.diff(np.r_[starts, num_frames])

    def pool(values: np.ndarray) -> np.ndarray:
        """[N, ...] frame values -> [T, ...] tracklet values, in a floating dtype."""
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        if method == "mean":
            sizes_shape = (-1,) + (1,) * (values.ndim - 1)
            return np.add.reduceat(values[order], starts, axis=0) / sizes.reshape(
                sizes_shape).astype(values.dtype)
        return np.maximum.reduceat(values[order], starts, axis=0)

    return SplitFeatures(
        global_=pool(features.global_),
        local=None if features.local is None else pool(features.local),
        pids=pids[first], camids=camids[first], paths=features.paths[first],
        tracklets=tracklets[first], frames=np.full(len(first), -1, np.int64))


def pool_multi_query(query: SplitFeatures, multi_query: SplitFeatures, method: str = "mean",
                     normalize: bool = True) -> tuple[SplitFeatures, np.ndarray]:
    """Each query replaced by the pooled features of the multi-query images of its identity and
    camera (Market-1501's multiple-query protocol).

    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015 (multiple
    queries): several images of the query person in the query's camera, their features
    averaged or max-pooled into one query. The official kit (and layumi's
    Person_reID_baseline_pytorch) takes them from the hand-drawn boxes (`gt_bbox/`, here the
    split "multi_query") by equal pid and equal camera, the query image itself among them. The
    pooled query is then ranked against the gallery like any query (the same junk rule: same
    pid and camera).

    Each image's feature is L2-normalised before pooling (the global one when `normalize`, each
    local stripe always), so every image weighs the same in the mean: a pooled vector is then
    ranked by its cosine to the gallery, as the official kit ranks the plain mean of its
    normalised features by inner product; `matching` normalises the pooled vector again. With
    `normalize` False the raw global features are pooled. A query whose (pid, camid) has no
    multi-query image keeps its own feature (normalised the same way): its `sizes` entry is 0.

    Args:
      query: Q query images.
      multi_query: M images; only those sharing a query's pid and camid are used.
      method: "mean" or "max" (element-wise).
      normalize: L2-normalise each global feature before pooling.

    Returns:
      (pooled, sizes): `pooled` has the queries' pids, camids, paths, tracklets and frames with
      global_ [Q, D] pooled (and local [Q, h, c] when both splits have stripes, else None), in
      the query's floating dtype (float64 for integer features); `sizes` [Q] int64 is the number
      of images pooled into each query.

    Raises:
      ValueError: an unknown method, or features of different widths or stripe shapes.
    """
    if method not in POOLING_METHODS:
        raise ValueError(f"method must be one of {POOLING_METHODS}, got {method!r}")
    if query.global_.shape[1:] != multi_query.global_.shape[1:]:
        raise ValueError(f"query and multi-query global features differ in width: "
                         f"{query.global_.shape} and {multi_query.global_.shape}")
    with_local = query.local is not None and multi_query.local is not None
    if with_local and query.local.shape[1:] != multi_query.local.shape[1:]:
        raise ValueError(f"query and multi-query stripes differ in shape: {query.local.shape} "
                         f"and {multi_query.local.shape}")
    num_m = len(multi_query)
    # One group per distinct (pid, camid) of either split; each query looks its group up.
    keys = np.concatenate([np.stack([multi_query.pids, multi_query.camids], axis=1),
                           np.stack([query.pids, query.camids], axis=1)]).reshape(-1, 2)
    unique_keys, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    m_group, q_group = group[:num_m], group[num_m:]
    count = np.bincount(m_group, minlength=len(unique_keys))
    sizes = count[q_group].astype(np.int64)
    has = sizes > 0
    # The multi-query images sorted by group, each group a run starting at `starts`.
    order = np.argsort(m_group, kind="stable")
    starts = np.flatnonzero(np.diff(m_group[order], prepend=-1))
    present = m_group[order][starts]

    def pool(q_values: np.ndarray, m_values: np.ndarray, unit: bool) -> np.ndarray:
        """[Q, ...] query values -> [Q, ...] pooled ones (the query's own where there are none)."""
        dtype = q_values.dtype if np.issubdtype(q_values.dtype, np.floating) else np.float64
        q_values, m_values = q_values.astype(np.float64), m_values.astype(np.float64)
        if unit:
            q_values, m_values = l2_normalize(q_values), l2_normalize(m_values)
        by_group = np.zeros((len(count),) + m_values.shape[1:])
        if num_m:
            if method == "mean":
                sums = np.add.reduceat(m_values[order], starts, axis=0)
                by_group[present] = sums / count[present].reshape((-1,) + (1,) * (sums.ndim - 1))
            else:
                by_group[present] = np.maximum.reduceat(m_values[order], starts, axis=0)
        return np.where(has.reshape((-1,) + (1,) * (q_values.ndim - 1)), by_group[q_group],
                        q_values).astype(dtype)

    pooled = SplitFeatures(
        global_=pool(query.global_, multi_query.global_, normalize),
        local=pool(query.local, multi_query.local, True) if with_local else None,
        pids=query.pids, camids=query.camids, paths=query.paths, tracklets=query.tracklets,
        frames=query.frames)
    return pooled, sizes
