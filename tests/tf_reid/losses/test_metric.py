"""Contrastive, batch-all triplet, quadruplet and MSML: hand-worked batches and slow loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.losses import metric, triplet

# 4 samples of 2 identities; a symmetric matrix written by hand.
DIST4 = np.array([[0.0, 1.0, 2.0, 3.0],
                  [1.0, 0.0, 4.0, 0.5],
                  [2.0, 4.0, 0.0, 1.5],
                  [3.0, 0.5, 1.5, 0.0]], np.float32)
PIDS4 = np.array([0, 0, 1, 1])
# 6 samples of 3 identities on a line: distances |x_i - x_j|.
X6 = np.array([0.0, 4.0, 3.0, 3.5, 7.0, 9.0], np.float32)
DIST6 = np.abs(X6[:, None] - X6[None, :])
PIDS6 = np.array([0, 0, 1, 1, 2, 2])


def test_contrastive_by_hand():
    # Anchor 0: positive (0,1) 1^2; negatives at 2 and 3 are beyond the margin 1.
    # Anchor 1: 1^2 + (1 - 0.5)^2. Anchor 2: 1.5^2. Anchor 3: 1.5^2 + 0.5^2. Each over 3 pairs.
    got = metric.contrastive(DIST4, PIDS4, margin=1.0).numpy()
    np.testing.assert_allclose(got, np.array([1.0, 1.25, 2.25, 2.5]) / 3, rtol=1e-6)


def test_batch_all_by_hand():
    # Active triplets (margin 1): (1,0,3) 1.5, (2,3,0) 0.5, (3,2,1) 2.0: sum 4 over 3 active.
    got = metric.batch_all_triplet(DIST4, PIDS4, margin=1.0).numpy()
    np.testing.assert_allclose(got, 4 * np.array([0.0, 1.5, 0.5, 2.0]) / 3, rtol=1e-6)
    assert got.mean() == pytest.approx(4 / 3)


def test_quadruplet_by_hand():
    # Anchor 0: d_ap 4, d_an 3 -> 2; nearest pair of identities 1 and 2 is (3.5, 7): 3.5 ->
    # max(4 - 3.5 + 0.5, 0) = 1. Anchor 1: d_an 0.5 -> 4.5, + 1. Anchor 2: d_ap 0.5, d_an 1 ->
    # 0.5, pairs of ids 0 and 2 are 3 apart -> 0. Anchor 3: d_an 0.5 -> 1. Anchors 4, 5: d_ap 2,
    # d_an 3 and 5 -> 0; ids 0 and 1 come within 0.5 -> 2.
    got = metric.quadruplet(DIST6, PIDS6, margin=1.0, second_margin=0.5).numpy()
    np.testing.assert_allclose(got, [3.0, 5.5, 0.5, 1.0, 2.0, 2.0], rtol=1e-6)
    # The second margin defaults to half the first (the paper's 1.0 / 0.5).
    np.testing.assert_allclose(metric.quadruplet(DIST6, PIDS6, margin=1.0).numpy(), got)


def test_msml_by_hand():
    # Farthest positive pair (0, 1) at 4, nearest negative pair (1, 3) at 0.5: 4 - 0.5 + 1.
    np.testing.assert_allclose(metric.margin_sample_mining(DIST6, PIDS6, margin=1.0).numpy(),
                               [4.5] * 6)


def loop_contrastive(d, pids, m):
    n = len(pids)
    out = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i] += d[i, j] ** 2 if pids[i] == pids[j] else max(m - d[i, j], 0) ** 2
    return out / (n - 1)


def loop_batch_all(d, pids, m):
    n = len(pids)
    sums, active = np.zeros(n), 0
    for a, p, q in itertools.product(range(n), repeat=3):
        if p != a and pids[p] == pids[a] and pids[q] != pids[a]:
            value = max(d[a, p] - d[a, q] + m, 0)
            sums[a] += value
            active += value > 0
    return n * sums / max(active, 1)


def loop_quadruplet(d, pids, m, m2):
    n = len(pids)
    out = np.zeros(n)
    for a in range(n):
        d_ap = max(d[a, p] for p in range(n) if p != a and pids[p] == pids[a])
        d_an = min(d[a, q] for q in range(n) if pids[q] != pids[a])
        pairs = [d[k, l] for k in range(n) for l in range(n)
                 if len({pids[a], pids[k], pids[l]}) == 3]
        out[a] = max(d_ap - d_an + m, 0) + max(d_ap - min(pairs) + m2, 0)
    return out


def loop_msml(d, pids, m):
    n = len(pids)
    far = max(d[i, j] for i in range(n) for j in range(n) if i != j and pids[i] == pids[j])
    near = min(d[i, j] for i in range(n) for j in range(n) if pids[i] != pids[j])
    return np.full(n, max(far - near + m, 0))


@pytest.mark.parametrize("seed", range(3))
def test_every_loss_equals_its_loop_on_random_pk_batches(seed):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(4), 3)  # P = 4, K = 3
    features = rng.normal(size=(12, 5)).astype(np.float32) + pids[:, None]
    d = np.linalg.norm(features[:, None] - features[None, :], axis=-1).astype(np.float32)
    m = 1.5
    for got, want in [
            (metric.contrastive(d, pids, m), loop_contrastive(d, pids, m)),
            (metric.batch_all_triplet(d, pids, m), loop_batch_all(d, pids, m)),
            (metric.quadruplet(d, pids, m, 0.7), loop_quadruplet(d, pids, m, 0.7)),
            (metric.margin_sample_mining(d, pids, m), loop_msml(d, pids, m))]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_msml_gradient_reaches_only_the_two_hardest_pairs():
    dist = tf.constant(DIST6)
    with tf.GradientTape() as tape:
        tape.watch(dist)
        loss = tf.reduce_mean(metric.margin_sample_mining(dist, PIDS6, margin=1.0))
    grad = tape.gradient(loss, dist).numpy()
    nonzero = {tuple(ij) for ij in np.argwhere(grad != 0)}
    assert nonzero <= {(0, 1), (1, 0), (1, 3), (3, 1)} and nonzero
    assert grad[np.nonzero(grad)].sum() == pytest.approx(0.0)  # +1 on d_far, -1 on d_near


def test_degenerate_batches_give_zero_not_nan():
    one_id = np.zeros(4, np.int64)
    for name, loss in metric.METRIC_LOSSES.items():
        values = loss(tf.constant(DIST4), tf.constant(PIDS4), 0.3).numpy()
        assert values.shape == (4,) and np.isfinite(values).all(), name
    # MSML with no negative pair, quadruplet with two identities: their extra terms vanish.
    assert metric.margin_sample_mining(DIST4, one_id, 0.3).numpy().tolist() == [0.0] * 4
    np.testing.assert_allclose(metric.quadruplet(DIST4, PIDS4, 1.0).numpy(),
                               triplet.batch_hard_triplet(DIST4, PIDS4, 1.0).numpy())


def test_registry_and_xla():
    assert metric.METRIC_LOSSES["trihard"] is triplet.batch_hard_triplet
    for name, loss in metric.METRIC_LOSSES.items():
        compiled = tf.function(lambda d, p, f=loss: f(d, p, 1.0), jit_compile=True)
        np.testing.assert_allclose(compiled(tf.constant(DIST6), tf.constant(PIDS6)).numpy(),
                                   loss(DIST6, PIDS6, 1.0).numpy(), rtol=1e-5, err_msg=name)


def test_random_triplet_draws_every_candidate_uniformly_and_only_candidates():
    pids = np.array([0, 0, 0, 1, 1, 1])
    same = pids[:, None] == pids[None, :]
    # Positive distances all different, negatives all 10: with margin 20 the loss is
    # d_ap + 10, which names the drawn positive. Then the same with the roles swapped.
    rng = np.random.default_rng(0)
    upper = np.triu(rng.uniform(1, 5, (6, 6)), 1)
    varied = (upper + upper.T).astype(np.float32)
    cases = {"positive": np.where(same, varied, 10.0).astype(np.float32),
             "negative": np.where(same, 10.0, varied).astype(np.float32)}
    np.fill_diagonal(cases["positive"], 0.0)
    np.fill_diagonal(cases["negative"], 0.0)
    draws = 400
    for role, dist in cases.items():
        picked = np.stack([metric.random_triplet(dist, pids, 20.0, seed=[s, 0]).numpy()
                           for s in range(draws)])
        drawn = picked - 10.0 if role == "positive" else 30.0 - picked  # d_ap or d_an
        for a in range(6):
            candidates = (same[a] & (np.arange(6) != a)) if role == "positive" else ~same[a]
            values = dist[a][candidates]
            counts = [np.sum(np.isclose(drawn[:, a], v, atol=1e-4)) for v in values]
            assert sum(counts) == draws, (role, a)  # never anything but a candidate
            expected = draws / len(values)  # binomial: 5 standard deviations either side
            spread = 5 * np.sqrt(draws * (1 / len(values)) * (1 - 1 / len(values)))
            assert all(abs(c - expected) < spread for c in counts), (role, a, counts)


def test_random_triplet_same_seed_same_draw():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(12, 4)).astype(np.float32)
    d = np.linalg.norm(features[:, None] - features[None, :], axis=-1)
    pids = np.repeat(np.arange(4), 3)
    first = metric.random_triplet(d, pids, 1.0, seed=[3, 1]).numpy()
    np.testing.assert_array_equal(metric.random_triplet(d, pids, 1.0, seed=[3, 1]).numpy(), first)
    assert any(not np.array_equal(metric.random_triplet(d, pids, 1.0, seed=[s, 1]).numpy(), first)
               for s in range(4, 8))
