"""tf_reid.evaluation.verification: hand-worked pairs, ROCs, TPR at FPR and AUC, each also
against its slow obvious twin (a loop over every threshold, a loop over every pair)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from tf_reid.evaluation import verification
from tf_reid.evaluation.verification import auc, pair_distances, roc, summary, tpr_at_fpr

# A tie between a positive and a negative (3) and one inside the positives (3, 3).
POSITIVES = np.array([5.0, 3.0, 8.0, 1.0, 3.0])
NEGATIVES = np.array([6.0, 2.0, 7.0, 3.0])


def reference_operating_points(positives, negatives):
    """(fpr, tpr) of accepting d < t for every threshold t that can change the decision (each
    distinct distance, and +inf), one pair at a time."""
    thresholds = sorted(set(positives) | set(negatives)) + [math.inf]
    return [(sum(n < t for n in negatives) / len(negatives),
             sum(p < t for p in positives) / len(positives)) for t in thresholds]


def reference_tpr_at_fpr(positives, negatives, fpr):
    """The best TPR over every threshold whose FPR is at most `fpr`."""
    return max(tpr for f, tpr in reference_operating_points(positives, negatives) if f <= fpr)


def reference_mann_whitney(positives, negatives):
    """P(pos < neg) + 1/2 P(pos = neg) over every (positive, negative) pair."""
    return sum(1.0 if p < n else 0.5 if p == n else 0.0
               for p in positives for n in negatives) / (len(positives) * len(negatives))


def random_pairs(rng):
    """Positives and negatives of random sizes on a coarse grid, so that ties are common."""
    num_positive, num_negative = rng.integers(1, 40, size=2)
    positives = rng.integers(0, 16, num_positive) / 4.0
    negatives = rng.integers(4, 24, num_negative) / 4.0  # overlapping, mostly farther
    return positives, negatives


def test_pair_distances_hand_built():
    # q0: pid 1, cam 0. q1: pid 2, cam 1. Distance q*10 + g names each pair.
    #   g0 pid 1 cam 0: junk for q0 (same pid, same camera), negative for q1
    #   g1 pid 1 cam 1: positive for q0, negative for q1
    #   g2 pid 2 cam 1: negative for q0, junk for q1
    #   g3 pid 3 cam 0: negative for both (a different pid in the query's camera still counts)
    #   g4 pid 2 cam 0: negative for q0, positive for q1
    distmat = np.array([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]], np.float32)
    positives, negatives = pair_distances(distmat, np.array([1, 2]), np.array([1, 1, 2, 3, 2]),
                                          np.array([0, 1]), np.array([0, 1, 1, 0, 0]))
    np.testing.assert_array_equal(positives, [1, 14])
    np.testing.assert_array_equal(negatives, [2, 3, 4, 10, 11, 13])
    assert positives.dtype == np.float32 and negatives.dtype == np.float32


def test_pair_distances_refuses_shapes_that_do_not_match():
    with pytest.raises(ValueError, match=r"g_pids must have shape \(3,\)"):
        pair_distances(np.zeros((2, 3)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"distmat must be \[Q, G\]"):
        pair_distances(np.zeros(3), np.zeros(1), np.zeros(3), np.zeros(1), np.zeros(3))


def test_roc_hand_worked_with_ties():
    # Thresholds (accept d < t) at each distinct distance 1 2 3 5 6 7 8, then above all:
    #   t=1: nothing (0, 0);  t=2: pos 1 (0, 1/5);  t=3: + neg 2 (1/4, 1/5)
    #   t=5: + pos 3, 3 and neg 3 together, the tie (2/4, 3/5);  t=6: + pos 5 (2/4, 4/5)
    #   t=7: + neg 6 (3/4, 4/5);  t=8: + neg 7 (1, 4/5);  above all: + pos 8 (1, 1)
    fpr, tpr = roc(POSITIVES, NEGATIVES)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 4, 2 / 4, 2 / 4, 3 / 4, 1, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, [0, 1 / 5, 1 / 5, 3 / 5, 4 / 5, 4 / 5, 4 / 5, 1], rtol=0,
                               atol=1e-15)
    # All distances equal: accepting anything accepts everything, one diagonal step.
    fpr, tpr = roc(np.array([1.0, 1.0]), np.array([1.0]))
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(tpr, [0, 1])


def test_tpr_at_fpr_hand_worked():
    # Sorted negatives 2 3 6 7 (N = 4), positives 1 3 3 5 8 (P = 5).
    cases = [
        (0.0, 1 / 5),    # k = 0: t = 2 accepts pos 1 only
        (0.2, 1 / 5),    # below 1/N = 0.25: the same as FPR 0
        (0.25, 1 / 5),   # k = 1: t = 3 accepts neg 2; the positives at 3 tie with neg 3
        (0.5, 4 / 5),    # k = 2: t = 6 accepts pos 1 3 3 5
        (0.74, 4 / 5),   # still k = 2
        (0.75, 4 / 5),   # k = 3: t = 7, no positive between 6 and 7
        (1.0, 1.0),      # k = N: everything, pos 8 included
    ]
    for fpr, want in cases:
        assert tpr_at_fpr(POSITIVES, NEGATIVES, fpr) == pytest.approx(want, abs=1e-15), fpr


def test_tpr_at_fpr_tied_negatives_and_k_at_least_n():
    # Negatives 2 2 6: one of the tied 2s cannot be accepted without the other, so FPR 1/3
    # allows only d < 2 (pos 1) and FPR 2/3 reaches t = 6 (pos 1 and 3).
    positives, negatives = np.array([3.0, 1.0]), np.array([2.0, 6.0, 2.0])
    assert tpr_at_fpr(positives, negatives, 1 / 3) == 0.5
    assert tpr_at_fpr(positives, negatives, 2 / 3) == 1.0
    # A positive beyond every negative is accepted only when every pair is (k = N).
    assert tpr_at_fpr(np.array([10.0]), np.array([1.0, 2.0]), 0.99) == 0.0
    assert tpr_at_fpr(np.array([10.0]), np.array([1.0, 2.0]), 1.0) == 1.0


def test_tpr_at_fpr_takes_k_over_n_exactly():
    # 0.29 * 100 is 28.999999999999996 in floating point, yet 29 / 100 <= 0.29: 29 negatives
    # are allowed, so t = 29 accepts the positive at 28.5 (t = 28 would accept none).
    positives, negatives = np.array([28.5, 29.5]), np.arange(100.0)
    assert 0.29 * 100 < 29 and 29 / 100 <= 0.29
    assert tpr_at_fpr(positives, negatives, 0.29) == 0.5
    assert reference_tpr_at_fpr(positives, negatives, 0.29) == 0.5


def test_roc_and_tpr_at_fpr_match_the_threshold_loop_on_random_pairs():
    rng = np.random.default_rng(0)
    fprs = [0.0, 1e-3, 0.05, 0.1, 0.25, 1 / 3, 0.29, 0.5, 0.9, 1.0]
    for _ in range(60):
        positives, negatives = random_pairs(rng)
        fpr, tpr = roc(positives, negatives)
        np.testing.assert_allclose(np.stack([fpr, tpr], axis=1),
                                   reference_operating_points(positives, negatives), atol=1e-15)
        for f in [*fprs, *rng.random(3)]:
            assert tpr_at_fpr(positives, negatives, f) == pytest.approx(
                reference_tpr_at_fpr(positives, negatives, f), abs=1e-15), f


def test_auc_hand_worked():
    # Per positive, negatives farther (a tie counts 1/2): 1 -> 4; 3 -> 6, 7 and the tie with 3:
    # 2.5 (twice); 5 -> 6, 7: 2; 8 -> 0. (4 + 5 + 2) / (5 x 4) = 0.55. Under the ROC of
    # test_roc_hand_worked_with_ties: trapezoids 1/4 x 1/5 + 1/4 x (1/5 + 3/5) / 2
    # + 1/4 x 4/5 + 1/4 x 4/5 = 0.05 + 0.1 + 0.2 + 0.2 = 0.55.
    assert auc(POSITIVES, NEGATIVES) == pytest.approx(0.55, abs=1e-15)
    assert auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0  # separated
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0  # reversed
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # all tied: chance


def test_auc_is_the_mann_whitney_probability_and_the_area_under_roc():
    rng = np.random.default_rng(1)
    for _ in range(40):
        positives, negatives = random_pairs(rng)
        got = auc(positives, negatives)
        assert got == pytest.approx(reference_mann_whitney(positives, negatives), abs=1e-12)
        fpr, tpr = roc(positives, negatives)
        assert got == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


def test_summary_hand_worked():
    got = summary(POSITIVES, NEGATIVES)
    # With N = 4 every default FPR is below 1/N: the TPR at FPR 0 (test_tpr_at_fpr_hand_worked).
    assert got == {"tpr_at_fpr": {"1e-04": pytest.approx(0.2), "1e-03": pytest.approx(0.2),
                                  "1e-02": pytest.approx(0.2)},
                   "auc": pytest.approx(0.55), "num_positive": 5, "num_negative": 4,
                   "positive_mean": pytest.approx(20 / 5), "negative_mean": pytest.approx(18 / 4)}
    assert list(got["tpr_at_fpr"]) == ["1e-04", "1e-03", "1e-02"]
    assert json.loads(json.dumps(got)) == got  # plain Python numbers
    assert summary(POSITIVES, NEGATIVES, fprs=(0.25, 0.5, 1.0))["tpr_at_fpr"] == {
        "2.5e-01": pytest.approx(0.2), "5e-01": pytest.approx(0.8), "1e+00": 1.0}


def test_fpr_keys_read_back_as_the_same_number():
    for fpr in (1e-4, 1e-3, 1e-2, 2.5e-3, 0.29, 1 / 3, 1.0, 0.0):
        assert float(verification.fpr_key(fpr)) == fpr
    assert [verification.fpr_key(f) for f in (1e-4, 2.5e-3)] == ["1e-04", "2.5e-03"]


@pytest.mark.parametrize("call", [
    lambda: tpr_at_fpr(POSITIVES, NEGATIVES, -0.1),
    lambda: tpr_at_fpr(POSITIVES, NEGATIVES, 1.5),
    lambda: summary(POSITIVES, NEGATIVES, fprs=(1e-3, 2.0)),
    lambda: roc(POSITIVES, np.array([])),
    lambda: auc(np.array([]), NEGATIVES),
    lambda: auc(np.array([1.0, np.nan]), NEGATIVES),
    lambda: roc(POSITIVES, np.array([1.0, np.inf])),
    lambda: tpr_at_fpr(POSITIVES.reshape(5, 1), NEGATIVES, 0.1),
])
def test_refuses_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_table_rows_are_the_summaries_in_percent():
    rows = {"global": summary(POSITIVES, NEGATIVES), "global+local": summary(NEGATIVES, POSITIVES)}
    lines = verification.table(rows)
    assert lines[1].split() == ["distance", "TPR@1e-04", "TPR@1e-03", "TPR@1e-02", "AUC"]
    assert lines[2].split() == ["global", "20.00", "20.00", "20.00", "55.00"]
    # Swapped, the old negatives are the positives: AUC 1 - 0.55; d < 1 accepts none of them.
    assert lines[3].split() == ["global+local", "0.00", "0.00", "0.00", "45.00"]
    assert lines[4] == "pairs: 5 positive (same identity, other camera), 4 negative"


def test_save_figure_writes_one_png(tmp_path):
    path = tmp_path / "verification.png"
    verification.save_figure({"global": (POSITIVES, NEGATIVES)}, str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["verification.png"]  # no partial file left
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 500 and height > 250
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # something is drawn
