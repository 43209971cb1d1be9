"""Batch-hard triplet mining and losses: hand-worked batches, loop references, XLA, gradients."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.losses.distance import pairwise_distance
from tf_reid.losses.triplet import batch_hard_triplet, hard_example_indices, local_trihard


@pytest.fixture(params=["eager", "xla"])
def compiled(request):
    """Runs a function as written or compiled by XLA; every test must hold for both."""
    if request.param == "eager":
        return lambda fn: fn
    return lambda fn: tf.function(fn, jit_compile=True)


# Six samples, identities 0 0 0 1 1 1; a symmetric distance matrix written by hand.
#
#          0    1    2    3    4    5     hardest pos   hardest neg   d_ap - d_an
#   0    0.0  0.4  1.2  2.0  1.0  3.0     2 (1.2)       4 (1.0)        0.2
#   1    0.4  0.0  0.6  0.7  2.2  1.9     2 (0.6)       3 (0.7)       -0.1
#   2    1.2  0.6  0.0  2.4  2.6  1.6     0 (1.2)       5 (1.6)       -0.4
#   3    2.0  0.7  2.4  0.0  0.9  0.3     4 (0.9)       1 (0.7)        0.2
#   4    1.0  2.2  2.6  0.9  0.0  1.1     5 (1.1)       0 (1.0)        0.1
#   5    3.0  1.9  1.6  0.3  1.1  0.0     4 (1.1)       2 (1.6)       -0.5
#
# margin 0.3: max(d_ap - d_an + 0.3, 0) = 0.5, 0.2, 0, 0.5, 0.4, 0
# soft margin: ln(1 + e^x) for x = 0.2, -0.1, -0.4, 0.2, 0.1, -0.5
#            = 0.79814, 0.64440, 0.51302, 0.79814, 0.74440, 0.47408
HAND_DIST = [[0.0, 0.4, 1.2, 2.0, 1.0, 3.0],
             [0.4, 0.0, 0.6, 0.7, 2.2, 1.9],
             [1.2, 0.6, 0.0, 2.4, 2.6, 1.6],
             [2.0, 0.7, 2.4, 0.0, 0.9, 0.3],
             [1.0, 2.2, 2.6, 0.9, 0.0, 1.1],
             [3.0, 1.9, 1.6, 0.3, 1.1, 0.0]]
HAND_PIDS = [0, 0, 0, 1, 1, 1]


def loop_hard_examples(dist: np.ndarray, pids: np.ndarray) -> tuple[list[int], list[int]]:
    """Per anchor, scan the row: farthest other same-pid sample, nearest other-pid sample."""
    pos_index, neg_index = [], []
    for a in range(len(pids)):
        best_pos, best_neg = a, a  # the documented fallbacks
        for j in range(len(pids)):
            if j != a and pids[j] == pids[a] and (best_pos == a or dist[a, j] > dist[a, best_pos]):
                best_pos = j
            if pids[j] != pids[a] and (best_neg == a or dist[a, j] < dist[a, best_neg]):
                best_neg = j
        pos_index.append(best_pos)
        neg_index.append(best_neg)
    return pos_index, neg_index


def loop_batch_hard(dist: np.ndarray, pids: np.ndarray, margin: float, soft: bool) -> np.ndarray:
    pos_index, neg_index = loop_hard_examples(dist, pids)
    out = []
    for a, (p, n) in enumerate(zip(pos_index, neg_index)):
        x = float(dist[a, p]) - float(dist[a, n])
        out.append(np.log1p(np.exp(x)) if soft else max(x + margin, 0.0))
    return np.array(out)


def pk_batch(seed: int, num_identities: int = 4, num_instances: int = 4, dim: int = 8):
    """Random features of P identities x K images, shuffled so identities are not contiguous."""
    rng = np.random.default_rng(seed)
    pids = np.repeat(rng.choice(1000, num_identities, replace=False), num_instances)
    features = rng.normal(size=(pids.size, dim)) + 0.5 * rng.normal(size=(1000, dim))[pids]
    order = rng.permutation(pids.size)
    return features[order].astype(np.float32), pids[order].astype(np.int32)


def test_hard_examples_hand_worked(compiled):
    pos, neg = compiled(hard_example_indices)(tf.constant(HAND_DIST), tf.constant(HAND_PIDS))
    np.testing.assert_array_equal(pos, [2, 2, 0, 4, 5, 4])
    np.testing.assert_array_equal(neg, [4, 3, 5, 1, 0, 2])
    assert pos.dtype == tf.int32 and neg.dtype == tf.int32


def test_batch_hard_hand_worked(compiled):
    dist, pids = tf.constant(HAND_DIST), tf.constant(HAND_PIDS)
    hinge = compiled(functools.partial(batch_hard_triplet, margin=0.3))(dist, pids)
    np.testing.assert_allclose(hinge, [0.5, 0.2, 0.0, 0.5, 0.4, 0.0], atol=1e-6)
    soft = compiled(functools.partial(batch_hard_triplet, soft_margin=True))(dist, pids)
    np.testing.assert_allclose(soft, [0.79814, 0.64440, 0.51302, 0.79814, 0.74440, 0.47408],
                               atol=1e-5)


def test_soft_margin_of_unit_gap(compiled):
    # Two identities, two images each; every anchor's positive is at 1, every negative at 2,
    # so each loss is ln(1 + e^-1) = 0.31326.
    dist = tf.constant([[0.0, 1.0, 2.0, 2.0],
                        [1.0, 0.0, 2.0, 2.0],
                        [2.0, 2.0, 0.0, 1.0],
                        [2.0, 2.0, 1.0, 0.0]])
    soft = compiled(functools.partial(batch_hard_triplet, soft_margin=True))(dist, [7, 7, 3, 3])
    np.testing.assert_allclose(soft, [0.31326] * 4, atol=1e-5)


def test_fallbacks_for_singleton_identity_and_single_identity_batch(compiled):
    # pid 5 has one image: its positive is itself. A batch of one pid has no negatives.
    dist = tf.constant([[0.0, 2.0, 1.0], [2.0, 0.0, 3.0], [1.0, 3.0, 0.0]])
    pos, neg = compiled(hard_example_indices)(dist, tf.constant([4, 4, 5]))
    np.testing.assert_array_equal(pos, [1, 0, 2])
    np.testing.assert_array_equal(neg, [2, 2, 0])
    pos, neg = compiled(hard_example_indices)(dist, tf.constant([4, 4, 4]))
    np.testing.assert_array_equal(pos, [1, 2, 1])
    np.testing.assert_array_equal(neg, [0, 1, 2])


def test_anchor_is_never_its_own_positive_even_with_a_large_diagonal(compiled):
    # A non-metric "distance" whose diagonal is the row maximum: mining must still skip it.
    dist = tf.constant([[9.0, 1.0, 2.0, 3.0],
                        [1.0, 9.0, 2.0, 3.0],
                        [2.0, 2.0, 9.0, 1.0],
                        [3.0, 3.0, 1.0, 9.0]])
    pos, _ = compiled(hard_example_indices)(dist, tf.constant([0, 0, 1, 1]))
    np.testing.assert_array_equal(pos, [1, 0, 3, 2])


@pytest.mark.parametrize("seed", range(3))
def test_hard_examples_match_loop(compiled, seed):
    rng = np.random.default_rng(seed)
    _, pids = pk_batch(seed)
    dist = rng.uniform(0.0, 3.0, size=(pids.size, pids.size)).astype(np.float32)  # not symmetric
    pos, neg = compiled(hard_example_indices)(tf.constant(dist), tf.constant(pids))
    ref_pos, ref_neg = loop_hard_examples(dist, pids)
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(neg, ref_neg)


@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_batch_hard_matches_loop_on_pk_batches(compiled, seed, soft_margin):
    features, pids = pk_batch(seed)
    loss_fn = functools.partial(batch_hard_triplet, margin=0.3, soft_margin=soft_margin)
    out = compiled(lambda f, p: loss_fn(pairwise_distance(f, f), p))(features, pids)
    dist = pairwise_distance(features, features).numpy()
    assert out.shape == (16,)
    np.testing.assert_allclose(out, loop_batch_hard(dist, pids, 0.3, soft_margin),
                               rtol=1e-5, atol=1e-6)


def test_zero_when_negatives_beyond_positives_by_margin(compiled):
    rng = np.random.default_rng(4)
    _, pids = pk_batch(4)
    same = pids[:, None] == pids[None, :]
    # Every positive in [0, 1], every negative in (1 + margin, 2]: the hardest pair still clears.
    dist = np.where(same, rng.uniform(0.0, 1.0, same.shape), rng.uniform(1.31, 2.0, same.shape))
    out = compiled(functools.partial(batch_hard_triplet, margin=0.3))(
        tf.constant(dist, tf.float32), tf.constant(pids))
    np.testing.assert_array_equal(out, np.zeros(pids.size))
    # ... while a margin larger than the gap makes every anchor pay.
    out = compiled(functools.partial(batch_hard_triplet, margin=2.0))(
        tf.constant(dist, tf.float32), tf.constant(pids))
    assert np.all(out.numpy() > 0)


def test_batch_hard_gradient_reaches_only_mined_entries(compiled):
    dist = tf.constant(HAND_DIST)

    def grad(dist):
        with tf.GradientTape() as tape:
            tape.watch(dist)
            total = tf.reduce_sum(batch_hard_triplet(dist, tf.constant(HAND_PIDS), margin=0.3))
        return tape.gradient(total, dist)

    # Active anchors 0, 1, 3, 4 (hand table): +1 at (a, pos), -1 at (a, neg); anchors 2, 5 are 0.
    expected = np.zeros((6, 6), np.float32)
    for a, p, n in [(0, 2, 4), (1, 2, 3), (3, 4, 1), (4, 5, 0)]:
        expected[a, p], expected[a, n] = 1.0, -1.0
    np.testing.assert_array_equal(compiled(grad)(dist), expected)


def test_batch_hard_on_features_has_finite_gradient(compiled):
    features, pids = pk_batch(5)

    def grad(features):
        with tf.GradientTape() as tape:
            tape.watch(features)
            dist = pairwise_distance(features, features)
            total = tf.reduce_sum(batch_hard_triplet(dist, pids, margin=10.0))  # all active
        return tape.gradient(total, features)

    g = compiled(grad)(tf.constant(features)).numpy()
    assert np.all(np.isfinite(g)) and np.any(g != 0)


# --- local_trihard ---------------------------------------------------------------------------

def mean_stripe_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[N, H, C] x2 -> [N]: Euclidean distance of corresponding stripes, averaged over stripes."""
    return tf.reduce_mean(tf.norm(x - y, axis=-1), axis=-1)


# Identities 0 0 1 1. Global distances, written by hand:
#        0    1    2    3          hardest negative by global distance: 3, 3, 0, 0
#   0  0.0  1.0  2.0  0.5
#   1  1.0  0.0  3.0  2.5
#   2  2.0  3.0  0.0  1.0
#   3  0.5  2.5  1.0  0.0
# Local features are scalars (H = C = 1) x = 0, 1, 1.5, 5, so local distances are |x_i - x_j|:
#   0-1: 1, 0-2: 1.5, 0-3: 5, 1-2: 0.5, 1-3: 4, 2-3: 3.5
# and local mining would pick the negatives 2, 2, 1, 1 instead.
# margin 1, global-mined pairs:  anchor 0: 1 - 5 + 1 -> 0      anchor 1: 1 - 4 + 1 -> 0
#                                anchor 2: 3.5 - 1.5 + 1 = 3   anchor 3: 3.5 - 5 + 1 -> 0
# (local-mined pairs would give 0.5, 1.5, 4, 0.5.)
LOCAL_GLOBAL_DIST = [[0.0, 1.0, 2.0, 0.5],
                     [1.0, 0.0, 3.0, 2.5],
                     [2.0, 3.0, 0.0, 1.0],
                     [0.5, 2.5, 1.0, 0.0]]
LOCAL_PIDS = [0, 0, 1, 1]
LOCAL_X = [[[0.0]], [[1.0]], [[1.5]], [[5.0]]]


def test_local_trihard_mines_on_global_distance(compiled):
    loss = functools.partial(local_trihard, margin=1.0, pair_distance=mean_stripe_distance)
    out = compiled(loss)(tf.constant(LOCAL_GLOBAL_DIST), tf.constant(LOCAL_X),
                         tf.constant(LOCAL_PIDS))
    np.testing.assert_allclose(out, [0.0, 0.0, 3.0, 0.0], atol=1e-6)
    # Sanity of the construction: mining on the local distances really disagrees.
    local_dist = pairwise_distance(tf.reshape(LOCAL_X, [4, 1]), tf.reshape(LOCAL_X, [4, 1]))
    np.testing.assert_allclose(batch_hard_triplet(local_dist, LOCAL_PIDS, margin=1.0),
                               [0.5, 1.5, 4.0, 0.5], atol=1e-6)


def test_local_trihard_gradients_flow_to_local_only(compiled):
    def grads(global_dist, local):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([global_dist, local])
            total = tf.reduce_sum(local_trihard(global_dist, local, tf.constant(LOCAL_PIDS),
                                                margin=1.0, pair_distance=mean_stripe_distance))
        g_global = tape.gradient(total, global_dist)
        return (tf.zeros_like(global_dist) if g_global is None else g_global,
                tape.gradient(total, local))

    g_global, g_local = compiled(grads)(tf.constant(LOCAL_GLOBAL_DIST), tf.constant(LOCAL_X))
    np.testing.assert_array_equal(g_global, np.zeros((4, 4)))
    # Only anchor 2 is active: loss = |x2 - x3| - |x2 - x0| + 1 with x0 < x2 < x3, so
    # d/dx0 = +1, d/dx1 = 0, d/dx2 = -1 - 1 = -2, d/dx3 = +1.
    np.testing.assert_allclose(np.reshape(g_local, [4]), [1.0, 0.0, -2.0, 1.0], atol=1e-6)


def test_local_trihard_global_dist_gradient_is_none_eagerly():
    global_dist = tf.constant(LOCAL_GLOBAL_DIST)
    local = tf.constant(LOCAL_X)
    with tf.GradientTape() as tape:
        tape.watch([global_dist, local])
        total = tf.reduce_sum(local_trihard(global_dist, local, LOCAL_PIDS, margin=1.0,
                                            pair_distance=mean_stripe_distance))
    g_global, g_local = tape.gradient(total, [global_dist, local])
    assert g_global is None
    assert g_local is not None


@pytest.mark.parametrize("soft_margin", [False, True])
def test_local_trihard_matches_loop(compiled, soft_margin):
    rng = np.random.default_rng(6)
    features, pids = pk_batch(6)
    local = rng.normal(size=(pids.size, 3, 5)).astype(np.float32)  # H = 3 stripes, C = 5
    global_dist = pairwise_distance(features, features)
    loss = functools.partial(local_trihard, margin=0.3, pair_distance=mean_stripe_distance,
                             soft_margin=soft_margin)
    out = compiled(loss)(global_dist, tf.constant(local), tf.constant(pids))

    pos_index, neg_index = loop_hard_examples(global_dist.numpy(), pids)
    expected = []
    for a, (p, n) in enumerate(zip(pos_index, neg_index)):
        d_ap = np.mean([np.linalg.norm(local[a, h] - local[p, h]) for h in range(3)])
        d_an = np.mean([np.linalg.norm(local[a, h] - local[n, h]) for h in range(3)])
        expected.append(np.log1p(np.exp(d_ap - d_an)) if soft_margin else max(d_ap - d_an + 0.3, 0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
