"""The slow obvious twins of `tf_reid.evaluation.metrics.evaluate_rank` and of
`tf_reid.evaluation.reranking.re_ranking` (the authors' dense release), shared by the tests and
bench/evaluation.py (its baselines), so there is one copy of each.

Not a test module (no `test_` prefix): pytest collects nothing here.
"""

from __future__ import annotations

import math

import numpy as np


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode):
    """The slow obvious twin: one query at a time, plain Python lists, MATLAB-style AP loop.

    Same protocol as `evaluate_rank`: gallery items of the query's identity and camera are
    junk (removed), ties rank by gallery index (Python's sort is stable), and queries without
    a match are skipped.

    Args:
        distmat: [Q, G] distances; q_pids, q_camids: [Q]; g_pids, g_camids: [G].
        max_rank: length of the CMC curve.
        ap_mode: "standard" (mean precision at each hit) or "trapezoid" (Market-1501's
            compute_AP.m).

    Returns:
        (cmc, mAP, mINP, number of queries evaluated, per-query AP with NaN where skipped).
    """
    num_q, num_g = distmat.shape
    cmcs, aps, inps = [], [], []
    per_query_ap = []
    for q in range(num_q):
        order = sorted(range(num_g), key=lambda g: distmat[q, g])
        kept = [g for g in order if not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])]
        hits = [bool(g_pids[g] == q_pids[q]) for g in kept]
        num_good = sum(hits)
        if num_good == 0:
            per_query_ap.append(math.nan)
            continue
        if ap_mode == "standard":
            found, total = 0, 0.0
            for r, hit in enumerate(hits, start=1):
                if hit:
                    found += 1
                    total += found / r
            ap = total / num_good
        else:
            # Transliteration of Market-1501's compute_AP.m (junk already removed).
            old_recall, old_precision, ap, intersect = 0.0, 1.0, 0.0, 0
            for j, hit in enumerate(hits):
                if hit:
                    intersect += 1
                recall = intersect / num_good
                precision = intersect / (j + 1)
                ap += (recall - old_recall) * ((old_precision + precision) / 2)
                old_recall, old_precision = recall, precision
        first = hits.index(True) + 1
        last = max(r for r, hit in enumerate(hits, start=1) if hit)
        cmcs.append([1.0 if first <= k + 1 else 0.0 for k in range(max_rank)])
        aps.append(ap)
        inps.append(num_good / last)
        per_query_ap.append(ap)
    cmc = [sum(c[k] for c in cmcs) / len(cmcs) for k in range(max_rank)]
    return cmc, sum(aps) / len(aps), sum(inps) / len(inps), len(aps), per_query_ap


def re_ranking_dense(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """The authors' release, one step at a time, holding dense (Q+G)x(Q+G) matrices: re-ranked
    distances [Q, G] (float32). The slow obvious twin of `reranking.re_ranking`; no argument checks.

    Args:
      q_g_dist: [Q, G] Euclidean query-gallery distances.
      q_q_dist: [Q, Q] Euclidean query-query distances.
      g_g_dist: [G, G] Euclidean gallery-gallery distances.
      k1, k2, lambda_value: as in the paper / release.
    """
    num_q = q_g_dist.shape[0]
    full = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    full = np.power(full, 2).astype(np.float32)
    original = np.transpose(1.0 * full / np.max(full, axis=0))
    num_all = original.shape[0]
    v = np.zeros_like(original, dtype=np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        rows_with_i = np.where(backward == i)[0]
        return forward[rows_with_i]

    for i in range(num_all):
        k_reciprocal = reciprocal(i, k1)
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            cand_reciprocal = reciprocal(candidate, half)
            overlap = len(np.intersect1d(cand_reciprocal, k_reciprocal))
            if overlap > 2.0 / 3 * len(cand_reciprocal):
                expansion = np.append(expansion, cand_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / np.sum(weight)

    original = original[:num_q]
    if k2 != 1:
        v_qe = np.zeros_like(v, dtype=np.float32)
        for i in range(num_all):
            v_qe[i, :] = np.mean(v[initial_rank[i, :k2], :], axis=0)
        v = v_qe

    inv_index = [np.where(v[:, col] != 0)[0] for col in range(num_all)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(num_q):
        temp_min = np.zeros(shape=[1, num_all], dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for col in nonzero:
            rows = inv_index[col]
            temp_min[0, rows] = temp_min[0, rows] + np.minimum(v[i, col], v[rows, col])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)

    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:num_q, num_q:]
