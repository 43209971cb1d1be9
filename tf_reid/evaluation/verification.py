"""Verification view of a query x gallery distance matrix: ROC, TPR at fixed FPRs, AUC.

NumPy in, NumPy out; no TensorFlow. Retrieval (`metrics`, `protocols`) asks "is a match ranked
first?"; verification asks of every single (query, gallery) pair "is it the same person?",
accepting a pair when its distance is below a threshold t. Over all thresholds that traces the
ROC: the false positive rate (accepted different-identity pairs / all of them) against the true
positive rate (accepted same-identity pairs / all of them). fast-reid reports this view as
TPR@FPR=1e-4, 1e-3, 1e-2 (`fastreid/evaluation/reid_evaluation.py`), reading sklearn's
`roc_curve` at the point whose FPR is nearest the target, which may exceed it; here the TPR is
the best one at an FPR no larger than the target, ties between distances included, so the
numbers can be lower than fast-reid's on the same distances.

`pair_distances` turns a [Q, G] matrix into the distances of its positive and negative pairs;
`roc`, `tpr_at_fpr`, `auc` and `summary` take those; `save_figure` draws histograms and ROCs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

FPRS = (1e-4, 1e-3, 1e-2)  # fast-reid's operating points

_CURVE_POINTS = 2000  # most points of a drawn ROC: millions of pairs draw the same


def pair_distances(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                   q_camids: np.ndarray, g_camids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The distances of every query x gallery pair, split into same and different identity.

    Same-identity pairs in the same camera are left out, as the ranking protocols leave them
    out (junk: the same view, often the same moment; Zheng et al., ICCV 2015). A
    different-identity pair is a negative whatever its cameras.

    Args:
      distmat: [Q, G] distances (smaller = more alike).
      q_pids, q_camids: [Q] query identities and cameras.
      g_pids, g_camids: [G] gallery identities and cameras.

    Returns:
      (positives [P], negatives [N]): the distances of the same-identity cross-camera pairs
      and of the different-identity pairs, in row-major order of `distmat`, its dtype.

    Raises:
      ValueError: shapes that do not match.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be [Q, G], got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a) for a in (q_pids, g_pids, q_camids,
                                                                   g_camids))
    for name, arr, n in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match distmat {distmat.shape}, "
                             f"got {arr.shape}")
    same_pid = q_pids[:, None] == g_pids[None, :]
    same_camera = q_camids[:, None] == g_camids[None, :]
    return distmat[same_pid & ~same_camera], distmat[~same_pid]


def _sorted_pairs(positives: np.ndarray, negatives: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Both sets ascending; a ValueError names an empty set, a bad shape or a non-finite one."""
    out = []
    for name, values in (("positives", positives), ("negatives", negatives)):
        values = np.asarray(values)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"{name} must be a non-empty [n] array, got shape {values.shape}")
        # Acceptance is d < t for a finite t, or everything: an infinite or NaN distance would
        # be neither accepted nor rejected consistently.
        if not np.isfinite(values).all():
            raise ValueError(f"{name} hold a distance that is not finite (NaN/inf)")
        out.append(np.sort(values))
    return out[0], out[1]


def _allowed_negatives(fprs: np.ndarray, num_negative: int) -> np.ndarray:
    """[F] the most negatives k an FPR budget allows: the largest k with k / N <= fpr.

    floor(fpr * N), corrected by one where the product rounds across an integer (0.29 * 100 is
    28.999999999999996 in floating point, while 29 / 100 <= 0.29 holds), so that the budget
    means exactly what comparing a measured FPR k / N with it means.
    """
    k = np.floor(fprs * num_negative).astype(np.int64)
    k += (k + 1) / num_negative <= fprs
    k -= k / num_negative > fprs
    return k


def _tpr_with_negatives(positives: np.ndarray, negatives: np.ndarray,
                        allowed: np.ndarray) -> np.ndarray:
    """[F] the best TPR of a threshold accepting at most `allowed` [F] negatives (both sets
    ascending): t = the (k+1)-th smallest negative, or every pair when k >= N."""
    num_negative = negatives.size
    thresholds = negatives[np.minimum(allowed, num_negative - 1)]
    tpr = np.searchsorted(positives, thresholds, side="left") / positives.size
    return np.where(allowed >= num_negative, 1.0, tpr)


def _checked_fprs(fprs: Sequence[float]) -> np.ndarray:
    fprs = np.asarray(fprs, dtype=np.float64)
    if fprs.ndim != 1 or not ((fprs >= 0) & (fprs <= 1)).all():
        raise ValueError(f"FPRs must lie in [0, 1], got {fprs.tolist()}")
    return fprs


def roc(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC of accepting a pair as the same person when its distance is below a threshold.

    One point per threshold that changes the decision: each distinct distance v (accepting
    d < v) and, last, a threshold above every distance. Tied distances are accepted together,
    so a tie between positives and negatives is one diagonal step.

    Args:
      positives: [P] distances of same-identity pairs.
      negatives: [N] distances of different-identity pairs.

    Returns:
      (fpr [T], tpr [T]) float64, non-decreasing, from (0, 0) to (1, 1); T is the number of
      distinct distances + 1.

    Raises:
      ValueError: an empty set, or a distance that is not finite.
    """
    positives, negatives = _sorted_pairs(positives, negatives)
    thresholds = np.unique(np.concatenate([positives, negatives]))
    fpr = np.searchsorted(negatives, thresholds, side="left") / negatives.size
    tpr = np.searchsorted(positives, thresholds, side="left") / positives.size
    return np.append(fpr, 1.0), np.append(tpr, 1.0)


def tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `fpr`.

    Accepting d < t, the best threshold is t = the (k+1)-th smallest negative with k =
    floor(fpr * N): it accepts at most k negatives, and any larger t accepts more than k. If
    k >= N, every pair is accepted (TPR 1). With N negatives the FPRs reachable are
    multiples of 1/N: an `fpr` below 1/N can only be met by accepting nothing from the
    smallest negative on, so it gives the TPR at FPR 0 (`summary` reports N for that reason).

    Args:
      positives: [P] distances of same-identity pairs.
      negatives: [N] distances of different-identity pairs.
      fpr: the largest false positive rate allowed, in [0, 1].

    Returns:
      The TPR, in [0, 1].

    Raises:
      ValueError: `fpr` outside [0, 1], an empty set, or a distance that is not finite.
    """
    fprs = _checked_fprs([fpr])
    positives, negatives = _sorted_pairs(positives, negatives)
    return float(_tpr_with_negatives(positives, negatives,
                                     _allowed_negatives(fprs, negatives.size))[0])


def _auc_sorted(positives: np.ndarray, negatives: np.ndarray) -> float:
    below = np.searchsorted(negatives, positives, side="left")  # negatives closer than each
    up_to = np.searchsorted(negatives, positives, side="right")
    wins = (negatives.size - up_to).sum(dtype=np.float64)
    ties = (up_to - below).sum(dtype=np.float64)
    return float((wins + 0.5 * ties) / (positives.size * negatives.size))


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under `roc` (trapezoid rule), in [0, 1]; 1 when every positive is closer than
    every negative.

    The trapezoid area of that curve equals P(pos < neg) + 1/2 P(pos = neg) over all
    (positive, negative) pairs, the Mann-Whitney U statistic / (P N) (Hanley & McNeil,
    Radiology 1982); it is computed that way, by binary search, without building the curve.

    Raises:
      ValueError: an empty set, or a distance that is not finite.
    """
    return _auc_sorted(*_sorted_pairs(positives, negatives))


def fpr_key(fpr: float) -> str:
    """The key of an FPR in `summary`'s "tpr_at_fpr": the shortest scientific notation that
    reads back as the same float, with a two-digit exponent ("1e-04", "2.5e-03").

    One key per float, readable as a number; a JSON file written with sorted keys orders them
    as strings ("1e-02" before "1e-04").
    """
    return np.format_float_scientific(fpr, trim="-", exp_digits=2)


def summary(positives: np.ndarray, negatives: np.ndarray,
            fprs: Sequence[float] = FPRS) -> dict[str, Any]:
    """The verification numbers of one distance, JSON-ready (plain Python numbers).

    Args:
      positives: [P] distances of same-identity pairs (`pair_distances`).
      negatives: [N] distances of different-identity pairs.
      fprs: the FPRs at which to report the TPR, each in [0, 1].

    Returns:
      {"tpr_at_fpr": {fpr_key(fpr): `tpr_at_fpr`, ...} in `fprs` order, "auc",
      "num_positive" (P), "num_negative" (N: FPRs below 1/N are not resolved),
      "positive_mean", "negative_mean" (mean distances)}.

    Raises:
      ValueError: as `tpr_at_fpr`.
    """
    fprs = _checked_fprs(fprs)
    positives, negatives = _sorted_pairs(positives, negatives)
    tprs = _tpr_with_negatives(positives, negatives, _allowed_negatives(fprs, negatives.size))
    return {"tpr_at_fpr": {fpr_key(f): float(t) for f, t in zip(fprs.tolist(), tprs)},
            "auc": _auc_sorted(positives, negatives),
            "num_positive": int(positives.size), "num_negative": int(negatives.size),
            "positive_mean": float(positives.mean(dtype=np.float64)),
            "negative_mean": float(negatives.mean(dtype=np.float64))}


def table(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """`summary` dicts by distance name as printable lines: TPR at each FPR and AUC, in %."""
    first = next(iter(summaries.values()))
    titles = [f"TPR@{key}" for key in first["tpr_at_fpr"]] + ["AUC"]
    width = max(len("distance"), *(len(name) for name in summaries))
    lines = ["verification (%)", f"{'distance':{width}}" + "".join(f" {t:>10}" for t in titles)]
    for name, row in summaries.items():
        values = [*row["tpr_at_fpr"].values(), row["auc"]]
        lines.append(f"{name:{width}}" + "".join(f" {100 * v:10.2f}" for v in values))
    # The pairs depend on pids and cameras only, so every distance has the same ones.
    lines.append(f"pairs: {first['num_positive']} positive (same identity, other camera), "
                 f"{first['num_negative']} negative")
    return lines


def save_figure(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str,
                fprs: Sequence[float] = FPRS) -> None:
    """One PNG with a row per distance: the positive and negative distance histograms, and
    the ROC on a log FPR axis marked at the TPR at each of `fprs`.

    The ROC is drawn as its upper staircase, the best TPR at FPR <= x, at every x = k / N (or
    at most 2000 of them, log-spaced): what `tpr_at_fpr` reads off it.

    Args:
      pairs: {distance name: (positives [P], negatives [N])}, as `pair_distances` returns.
      path: the .png to write (atomically; its folder must exist).
      fprs: the FPRs to mark, each in (0, 1].
    """
    from tf_reid.evaluation import figures  # matplotlib only when drawing

    fprs = _checked_fprs(fprs)
    figure, axes = figures.new_figure(11, 3.6 * len(pairs), columns=2, rows=len(pairs))
    axes = np.asarray(axes).reshape(len(pairs), 2)
    for (name, (positives, negatives)), (hist_ax, roc_ax) in zip(pairs.items(), axes):
        positives, negatives = _sorted_pairs(positives, negatives)
        low = min(positives[0], negatives[0])
        high = max(positives[-1], negatives[-1], low + 1e-6)  # one shared range, never empty
        edges = np.linspace(low, high, 51)
        for values, label in ((positives, "same identity"), (negatives, "different identity")):
            density, _ = np.histogram(values, edges, density=True)
            hist_ax.stairs(density, edges, fill=True, alpha=0.5,
                           label=f"{label} ({values.size} pairs)")
        hist_ax.set(title=f"{name}: pair distances", xlabel="distance", ylabel="density")
        hist_ax.legend()

        num_negative = negatives.size
        if num_negative <= _CURVE_POINTS:
            allowed = np.arange(num_negative + 1)
        else:
            allowed = np.unique(np.r_[0, np.geomspace(1, num_negative, _CURVE_POINTS)
                                      .round().astype(np.int64)])
        # FPR 0 has no place on a log axis: the curve starts at the left edge instead.
        left = min(fprs.min(initial=1.0), 1.0 / num_negative) / 2
        x = np.maximum(allowed / num_negative, left)
        roc_ax.step(x, _tpr_with_negatives(positives, negatives, allowed), where="post",
                    label=f"ROC (AUC {100 * _auc_sorted(positives, negatives):.2f}%)")
        marked = fprs[fprs > 0]
        roc_ax.plot(marked, _tpr_with_negatives(positives, negatives,
                                                _allowed_negatives(marked, num_negative)),
                    "o", label="TPR@FPR " + ", ".join(fpr_key(f) for f in marked))
        roc_ax.axvline(1.0 / num_negative, color="grey", linestyle=":",
                       label=f"FPR 1/N (N = {num_negative})")
        roc_ax.set_xscale("log")
        roc_ax.set(title=f"{name}: ROC", xlim=(left, 1.0), ylim=(-0.02, 1.02),
                   xlabel="false positive rate", ylabel="true positive rate")
        roc_ax.legend(loc="best")
    figures.save(figure, path)
