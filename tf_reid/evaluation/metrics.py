"""CMC, mAP and mINP for single-shot query/gallery ReID protocols (Market-1501, DukeMTMC, MSMT17).

NumPy in, NumPy out; no TensorFlow. The protocol follows torchreid's `metrics/rank.py`
(Zhou et al.) and the Market-1501 evaluation code (Zheng et al., ICCV 2015): for each query,
gallery items with the query's pid *and* camera are junk and removed before ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AP_MODES = ("standard", "trapezoid")

_NO_MATCH = "no query has a gallery match after removing same-camera matches; check pids/camids"


def _validate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode, block):
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    for name, arr, n, side in (
        ("q_pids", q_pids, num_q, "num_query"),
        ("q_camids", q_camids, num_q, "num_query"),
        ("g_pids", g_pids, num_g, "num_gallery"),
        ("g_camids", g_camids, num_g, "num_gallery"),
    ):
        if arr.shape != (n,):
            raise ValueError(
                f"{name} must have shape ({side}={n},) to match distmat {distmat.shape}, "
                f"got {arr.shape}"
            )
    for name, value in (("max_rank", max_rank), ("block", block)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if ap_mode not in AP_MODES:
        raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")


def _gallery_by_pid(g_pids):
    """(order, sorted_pids): gallery indices grouped by pid, in gallery order within a pid."""
    order = np.argsort(g_pids, kind="stable")
    return order, g_pids[order]


def _evaluate_block(dist, q_pids, q_camids, g_camids, g_order, g_sorted_pids, ap_mode):
    """Per-query first-match rank, AP and INP for a [b, num_gallery] block of distances.

    Ranks only each query's same-pid gallery items (see "Speed" in `evaluate_rank`).

    Returns (ngood [b], first_rank [b], ap [b], inp [b]); rank, AP and INP are meaningless
    (zero) where ngood == 0.
    """
    b = dist.shape[0]
    # Same-pid gallery items of every query, grouped by query row: item i is (rows[i], cols[i]).
    pid_start = np.searchsorted(g_sorted_pids, q_pids, side="left")
    count = np.searchsorted(g_sorted_pids, q_pids, side="right") - pid_start
    row_start = np.cumsum(count) - count
    rows = np.repeat(np.arange(b), count)
    cols = g_order[np.arange(rows.size) - row_start[rows] + pid_start[rows]]
    values = dist[rows, cols]

    sorted_dist = np.sort(dist, axis=1)
    pos = np.empty(rows.size, dtype=np.int64)
    tied = np.zeros(rows.size, dtype=bool)
    # searchsorted orders NaN last, as the sort does (and as a stable argsort ranks it).
    for r in np.flatnonzero(count):
        items = slice(row_start[r], row_start[r] + count[r])
        pos[items] = np.searchsorted(sorted_dist[r], values[items], side="left")
        tied[items] = np.searchsorted(sorted_dist[r], values[items], side="right") > pos[items] + 1
    del sorted_dist
    for i in np.flatnonzero(tied):
        before = dist[rows[i], : cols[i]]
        value = values[i]
        # NaN != NaN, but a stable argsort keeps NaNs in gallery order like any tie.
        pos[i] += np.count_nonzero(before != before if value != value else before == value)

    # Visit each row's items in ranking order (positions within a row are distinct) and drop
    # junk: a match's rank among the non-junk items is its position minus the junk ahead of it.
    order = np.lexsort((pos, rows))
    pos, junk = pos[order], (g_camids[cols] == q_camids[rows])[order]
    junk_ahead = np.cumsum(junk) - junk
    junk_ahead -= junk_ahead[row_start[rows]]
    good = ~junk
    rows = rows[good]  # still grouped by row, each row's hits in rank order
    hit_rank = (pos[good] - junk_ahead[good] + 1).astype(np.float64)

    ngood = np.bincount(rows, minlength=b)
    starts = np.cumsum(ngood) - ngood
    hit_count = (np.arange(rows.size) - starts[rows] + 1).astype(np.float64)  # i-th hit, 1-based

    precision = hit_count / hit_rank
    if ap_mode == "standard":
        terms = precision
    else:
        # Precision at the item just before the hit: (i - 1) hits in (rank - 1) items; 1 at rank 1.
        before = np.where(hit_rank > 1, (hit_count - 1) / np.maximum(hit_rank - 1, 1), 1.0)
        terms = (before + precision) / 2
    has = ngood > 0
    safe_ngood = np.maximum(ngood, 1)
    ap = np.bincount(rows, weights=terms, minlength=b) / safe_ngood

    first_rank = np.zeros(b, dtype=np.int64)
    last_rank = np.ones(b, dtype=np.float64)
    first_rank[has] = hit_rank[starts[has]]
    last_rank[has] = hit_rank[starts[has] + ngood[has] - 1]
    inp = ngood / last_rank
    return ngood, first_rank, ap, inp


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    ap_mode: str = "standard",
    block: int = 1024,
    return_details: bool = False,
) -> tuple[np.ndarray, float] | dict[str, Any]:
    """CMC curve and mAP of a query-by-gallery distance matrix (smaller distance = better).

    Protocol, per query: gallery items with the query's pid and the query's camera are junk and
    removed; the remaining same-pid items are its matches. A query with no match left is skipped:
    it counts towards `num_skipped`, gets AP NaN in the details, and is left out of every mean.
    Ties in distance are broken by gallery index, exactly as with a stable argsort of each row:
    -0.0 ties with 0.0, and NaN distances rank last (after +inf), in gallery order.

    CMC: `cmc[k]` is the fraction of evaluated queries whose first match is at rank <= k + 1
    (ranks counted after junk removal). When the gallery is shorter than `max_rank`, the curve
    is padded by repeating its last value (every evaluated query has found its match by then,
    so that value is 1.0).

    AP, with hits at 1-based ranks r_1 < ... < r_n (n = number of matches) and P(r) = hits in
    the first r items / r:
      - "standard": AP = (1/n) sum_i P(r_i) = (1/n) sum_i i / r_i, the non-interpolated AP of
        torchreid and the Market-1501 Python code.
      - "trapezoid": the official Market-1501 MATLAB `compute_AP.m` (from the Oxford Buildings
        `compute_ap.cpp`): AP = (1/n) sum_i (P(r_i - 1) + P(r_i)) / 2, where
        P(r_i - 1) = (i - 1) / (r_i - 1) is the precision at the item just before the hit
        (MATLAB updates `old_precision` at every non-junk position, not only at hits) and
        P(0) = 1. Since P(r_i - 1) <= P(r_i), it never exceeds the standard AP; the two agree
        only when every match is ranked ahead of every non-match.
    mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook",
    TPAMI 2021): INP = n / r_n, the number of matches over the rank of the hardest (last) match;
    mINP is its mean over evaluated queries.

    Speed: rows are never argsorted. Only the ranks of each query's same-pid gallery items (its
    matches and junk) are needed, and an item's place in the stable order of its row is the
    number of smaller distances, read off the row's sorted values (NumPy's value sort is much
    faster than a stable argsort; BUILD.md has the figure), plus the number of equal distances
    at smaller gallery indices, counted directly for the few items whose distance is not unique
    in its row.

    Memory: queries are processed `block` rows at a time, so the only wide working array is the
    sorted copy of one block of `distmat` (its itemsize an entry: 65 MB for a float32
    1,024 x 15,913 block, 0.3 GB for 1,024 x 82,161 at MSMT17 size); the rest is
    O(same-pid pairs).

    Args:
        distmat: [num_query, num_gallery] distances.
        q_pids: [num_query] query identities.
        g_pids: [num_gallery] gallery identities; distractors (e.g. Market-1501 pid 0) are just
            another non-matching pid.
        q_camids: [num_query] query camera ids.
        g_camids: [num_gallery] gallery camera ids.
        max_rank: length of the returned CMC curve.
        ap_mode: "standard" or "trapezoid" (see above).
        block: number of queries sorted at once.
        return_details: return a dict instead of (cmc, mAP).

    Returns:
        (cmc [max_rank] float64, mAP float), or with `return_details` a dict with keys
        "cmc", "mAP", "mINP", "num_evaluated", "num_skipped", "ap" ([num_query] float64, NaN
        for skipped queries) and "inp" ([num_query] float64, NaN for skipped queries).

    Raises:
        ValueError: on inconsistent shapes or arguments, or when no query has a match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    _validate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode, block)

    num_q = distmat.shape[0]
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    first_rank = np.zeros(num_q, dtype=np.int64)
    g_order, g_sorted_pids = _gallery_by_pid(g_pids)
    for start in range(0, num_q, block):
        stop = min(start + block, num_q)
        ngood, first, ap_b, inp_b = _evaluate_block(
            distmat[start:stop], q_pids[start:stop], q_camids[start:stop], g_camids, g_order,
            g_sorted_pids, ap_mode,
        )
        has = ngood > 0
        ap[start:stop][has] = ap_b[has]
        inp[start:stop][has] = inp_b[has]
        first_rank[start:stop] = first

    evaluated = ~np.isnan(ap)
    num_evaluated = int(evaluated.sum())
    if num_evaluated == 0:
        raise ValueError(_NO_MATCH)

    # Histogram of first-match ranks; ranks beyond max_rank fall into an ignored overflow bin.
    counts = np.bincount(np.minimum(first_rank[evaluated], max_rank + 1), minlength=max_rank + 2)
    cmc = np.cumsum(counts[1 : max_rank + 1]) / num_evaluated
    mean_ap = float(ap[evaluated].mean())
    if not return_details:
        return cmc, mean_ap
    return {
        "cmc": cmc,
        "mAP": mean_ap,
        "mINP": float(inp[evaluated].mean()),
        "num_evaluated": num_evaluated,
        "num_skipped": num_q - num_evaluated,
        "ap": ap,
        "inp": inp,
    }


def chance_level(q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                 g_camids: np.ndarray) -> dict[str, float | int]:
    """Expected rank-1 and mAP of a uniformly random ranking, under `evaluate_rank`'s protocol.

    For a query with m matches among the n gallery items left after junk removal, the first
    item of a random ranking is a match with probability m / n, and the expected standard AP
    is H_n / n + (m - 1)(n - H_n) / (n (n - 1)) (H_n the n-th harmonic number): AP =
    (1/m) sum over matches r, s of [pos_s <= pos_r] / pos_r, where E[1 / pos_r] = H_n / n and,
    for s != r, E[[pos_s < pos_r] / pos_r] = sum_p (1/n)(1/p)(p - 1)/(n - 1). Both are averaged
    over the queries `evaluate_rank` evaluates (those with m > 0).

    Args:
        q_pids, q_camids: [num_query]; g_pids, g_camids: [num_gallery].

    Returns:
        {"rank1", "mAP", "num_query"} where num_query counts the evaluated queries.
    """
    def counts(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """How often each row of `queries` occurs among the rows of `keys`."""
        values, number = np.unique(keys, axis=0, return_counts=True)
        where = {tuple(v): c for v, c in zip(values.tolist(), number.tolist())}
        return np.array([where.get(tuple(q), 0) for q in queries.tolist()], np.float64)

    q_pids, g_pids = np.asarray(q_pids).reshape(-1, 1), np.asarray(g_pids).reshape(-1, 1)
    q_pid_cam = np.concatenate([q_pids, np.asarray(q_camids).reshape(-1, 1)], axis=1)
    g_pid_cam = np.concatenate([g_pids, np.asarray(g_camids).reshape(-1, 1)], axis=1)
    junk = counts(g_pid_cam, q_pid_cam)
    m = counts(g_pids, q_pids) - junk
    n = len(g_pids) - junk
    evaluated = m > 0
    if not evaluated.any():
        raise ValueError(_NO_MATCH)
    m, n = m[evaluated], n[evaluated]
    harmonic = np.cumsum(1.0 / np.arange(1, int(n.max()) + 1))[n.astype(np.int64) - 1]
    pair_term = np.divide((m - 1) * (n - harmonic), n * (n - 1), out=np.zeros_like(n),
                          where=n > 1)
    return {"rank1": float(np.mean(m / n)), "mAP": float(np.mean(harmonic / n + pair_term)),
            "num_query": int(evaluated.sum())}
