"""The slow obvious twin of `tf_reid.evaluation.metrics.evaluate_rank`, shared by the tests
and bench/evaluation.py (its per-query loop baseline), so there is one copy.

Not a test module (no `test_` prefix): pytest collects nothing here.
"""

from __future__ import annotations

import math


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
