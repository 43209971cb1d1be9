"""The train step: per-student gradients, loss scaling over replicas, the real ResNet50."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.tf_reid.training.conftest import LABELS, WEIGHTS, images, students
from tf_reid.losses import metric
from tf_reid.training import objective, trainer

def reference_gradients(models, x, labels, index, weight_decay):
    """Student `index`'s gradient of its own loss, with the peers' outputs as constants; x is
    one batch for every student or a list of one batch per student."""
    xs = x if isinstance(x, list) else [x] * len(models)
    with tf.GradientTape() as tape:
        outs = [m(xi, training=True) for m, xi in zip(models, xs)]
        outs = [o if i == index else {k: tf.stop_gradient(v) for k, v in o.items()}
                for i, o in enumerate(outs)]
        own = [objective.student_terms(o, labels, WEIGHTS) for o in outs]
        terms = dict(own[index][0])
        terms.update(objective.mutual_terms(index, [o["logits"] for o in outs],
                                            [d for _, d in own], WEIGHTS))
        loss = tf.reduce_mean(objective.weighted_sum(terms, WEIGHTS))
        loss += objective.l2_penalty(models[index].trainable_variables, weight_decay)
    return tape.gradient(loss, models[index].trainable_variables)


def test_each_student_moves_along_its_own_loss_gradient():
    models = students(3)
    x = images()
    before = [[v.numpy() for v in m.trainable_variables] for m in models]
    expected = [reference_gradients(models, x, LABELS, i, 1e-3) for i in range(3)]
    lr = 0.01
    optimizers = [keras.optimizers.SGD(lr) for _ in models]
    t = trainer.MutualTrainer(models, optimizers, WEIGHTS, weight_decay=1e-3)
    logs = t.train_step((tf.constant(x), tf.constant(LABELS)))
    for m, old, grads in zip(models, before, expected):
        for v, w0, g in zip(m.trainable_variables, old, grads):
            np.testing.assert_allclose((w0 - v.numpy()) / lr, g.numpy(), rtol=2e-3, atol=2e-5,
                                       err_msg=v.path)
    assert set(logs) >= {"loss", "loss_0", "loss_1", "loss_2", "mutual_id", "mutual_metric",
                         "active_triplets", "d_ap", "d_an"}


def test_with_one_view_per_student_each_learns_from_its_own_view():
    """Images [B, V, H, W, 3]: student i's update is the gradient of its loss computed on view
    i, the mutual terms comparing its outputs on view i with its peer's on the other view."""
    models = students(2, seed=2)
    views = [images(3), images(4)]
    before = [[v.numpy() for v in m.trainable_variables] for m in models]
    expected = [reference_gradients(models, views, LABELS, i, 1e-3) for i in range(2)]
    lr = 0.01
    t = trainer.MutualTrainer(models, [keras.optimizers.SGD(lr) for _ in models], WEIGHTS,
                              weight_decay=1e-3)
    t.train_step((tf.constant(np.stack(views, axis=1)), tf.constant(LABELS)))
    for m, old, grads in zip(models, before, expected):
        for v, w0, g in zip(m.trainable_variables, old, grads):
            np.testing.assert_allclose((w0 - v.numpy()) / lr, g.numpy(), rtol=2e-3, atol=2e-5,
                                       err_msg=v.path)
    with pytest.raises(ValueError, match="3 views for 2 students"):
        t(tf.constant(np.stack(views + views[:1], axis=1)))


def test_fit_before_build_optimizers_is_one_clear_error():
    pair = students(2)
    t = trainer.MutualTrainer(pair, [keras.optimizers.Adam(1e-3) for _ in pair])
    t.compile(optimizer=t.student_optimizers[0])
    data = tf.data.Dataset.from_tensors((images(1), LABELS)).repeat()
    with pytest.raises(RuntimeError, match="build_optimizers"):
        t.fit(data, epochs=1, steps_per_epoch=1, verbose=0)


def test_without_mutual_terms_students_train_independently():
    x, labels = tf.constant(images(1)), tf.constant(LABELS)
    weights = objective.LossWeights(mutual_id=0.0, mutual_metric=0.0)
    pair = students(2, seed=5)
    alone = students(2, seed=5)
    trainer.MutualTrainer(pair, [keras.optimizers.Adam(1e-2) for _ in pair], weights
                          ).train_step((x, labels))
    trainer.MutualTrainer(alone[1:], [keras.optimizers.Adam(1e-2)], weights).train_step((x, labels))
    for a, b in zip(pair[1].weights, alone[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_a_baseline_step_trains_every_variable_it_has():
    """Without the local TriHard, students without a local branch: every trainable variable
    gets a gradient (Keras warns of those that do not) and moves."""
    weights = objective.LossWeights(local_triplet=0.0)
    pair = students(2, seed=6, local_branch=False)
    before = [[v.numpy() for v in m.trainable_variables] for m in pair]
    t = trainer.MutualTrainer(pair, [keras.optimizers.SGD(0.1) for _ in pair], weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.train_step((tf.constant(images(2)), tf.constant(LABELS)))
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    for m, old in zip(pair, before):
        for v, w0 in zip(m.trainable_variables, old):
            assert not np.array_equal(v.numpy(), w0), v.path


def test_a_sampling_metric_loss_draws_with_the_step_and_replica_as_seed():
    weights = objective.LossWeights(metric_loss="random_triplet", local_triplet=0.0)
    (student,) = students(1, seed=8, local_branch=False)
    t = trainer.MutualTrainer([student], [keras.optimizers.SGD(0.0)], weights)  # nothing moves
    x = tf.constant(images(3))
    expected = []
    for step in range(2):
        dist = objective.student_terms(student(x, training=True), LABELS, weights)[1]
        expected.append(float(tf.reduce_mean(metric.random_triplet(
            dist, LABELS, weights.margin, seed=[step, 0]))))
    t.train_step((x, tf.constant(LABELS)))
    first = float(t.trackers["global_triplet"].result())
    t.train_step((x, tf.constant(LABELS)))
    second = 2 * float(t.trackers["global_triplet"].result()) - first  # trackers average
    assert abs(expected[0] - expected[1]) > 1e-3  # the two steps' draws differ
    np.testing.assert_allclose([first, second], expected, rtol=1e-4)


def batch_hard(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow reference: per anchor the largest same-label and smallest other-label Euclidean
    distance."""
    f = features.astype(np.float64)
    d_ap, d_an = [], []
    for i in range(len(labels)):
        dist = [np.linalg.norm(f[i] - f[j]) for j in range(len(labels))]
        d_ap.append(max(d for j, d in enumerate(dist) if labels[j] == labels[i]))
        d_an.append(min(d for j, d in enumerate(dist) if labels[j] != labels[i]))
    return np.array(d_ap), np.array(d_an)


def test_generated_rows_take_no_part_in_mining_or_the_metric_terms():
    """Generated copies of identity 1's images (label -1, at distance 0 from them) would be the
    hardest negatives of identity 1 if mined; the step's d_an is that of the real rows alone."""
    (student,) = students(1, seed=4)
    real = images(5)
    x = np.concatenate([real, real[2:4]])  # rows 8, 9 are copies of identity 1's rows 2, 3
    labels = np.concatenate([LABELS, [-1, -1]])
    t = trainer.MutualTrainer([student], [keras.optimizers.SGD(0.0)], WEIGHTS,
                              generated_per_batch=2)
    logs = t.train_step((tf.constant(x), tf.constant(labels)))
    features = student(tf.constant(x), training=True)["global"].numpy()
    np.testing.assert_allclose(features[8], features[2], atol=1e-6)
    d_ap, d_an = batch_hard(features[:8], LABELS)
    assert d_an[2:4].min() > 1e-3
    np.testing.assert_allclose(float(logs["d_ap"]), d_ap.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(logs["d_an"]), d_an.mean(), rtol=1e-4)
    expected_triplet = np.maximum(d_ap - d_an + WEIGHTS.margin, 0.0).mean()
    np.testing.assert_allclose(float(logs["global_triplet"]), expected_triplet, rtol=1e-4,
                               atol=1e-6)


def test_a_step_with_generated_images_follows_the_lsro_objective():
    """ID term averaged over the 8 real + 2 generated images (LSRO for the generated: the mean
    of -log softmax over the 4 classes), every other term over the 8 real ones."""
    (student,) = students(1, seed=7)
    x = np.concatenate([images(6), images(7, (2, 16, 8, 3))])
    labels = np.concatenate([LABELS, [-1, -1]])
    weights = objective.LossWeights(local_triplet=0.5, label_smoothing=0.1)
    before = [v.numpy() for v in student.trainable_variables]
    with tf.GradientTape() as tape:
        out = student(tf.constant(x), training=True)
        terms, _ = objective.student_terms({k: v[:8] for k, v in out.items()}, LABELS, weights)
        lsro = -tf.reduce_mean(tf.nn.log_softmax(out["logits"][8:]), axis=1)
        loss = (weights.id * (tf.reduce_sum(terms["id"]) + tf.reduce_sum(lsro)) / 10.0
                + tf.reduce_sum(weights.global_triplet * terms["global_triplet"]
                                + weights.local_triplet * terms["local_triplet"]) / 8.0
                + objective.l2_penalty(student.trainable_variables, 1e-3))
    grads = tape.gradient(loss, student.trainable_variables)
    lr = 0.01
    t = trainer.MutualTrainer([student], [keras.optimizers.SGD(lr)], weights, weight_decay=1e-3,
                              generated_per_batch=2)
    logs = t.train_step((tf.constant(x), tf.constant(labels)))
    for v, w0, g in zip(student.trainable_variables, before, grads):
        np.testing.assert_allclose((w0 - v.numpy()) / lr, g.numpy(), rtol=2e-3, atol=2e-5,
                                   err_msg=v.path)
    np.testing.assert_allclose(float(logs["lsro"]), float(tf.reduce_mean(lsro)), rtol=1e-5)
    assert float(logs["lsro"]) >= np.log(4.0)  # never below the uniform distribution's entropy


MIRRORED = textwrap.dedent("""
    import json, sys
    from tf_reid.training import strategies
    strategies.split_cpu(2)
    import keras, numpy as np, tensorflow as tf
    from tests.tf_reid.training.conftest import LABELS, WEIGHTS, images, students
    from tf_reid.training import objective, trainer

    x = images(2)
    reference = students(2, seed=3)
    initial = [m.get_weights() for m in reference]
    strategy = strategies.STRATEGIES["mirrored"]()
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        models = students(2, seed=3)
        for m, w in zip(models, initial):
            m.set_weights(w)
        optimizers = [keras.optimizers.SGD(0.01) for _ in models]
        t = trainer.MutualTrainer(models, optimizers, WEIGHTS, weight_decay=1e-3)
        t.build_optimizers()
        t.compile(optimizer=optimizers[0], jit_compile=False)
    # A different second batch: the step must train on the first.
    data = tf.data.Dataset.from_tensors((x, LABELS)).concatenate(
        tf.data.Dataset.from_tensors((images(9), LABELS))).repeat()
    t.fit(data, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)

    # The same step on one device: each replica's half batch is its own forward pass (own
    # BatchNorm statistics, own mining), per-example losses summed over both halves and divided
    # by the global batch of 8, the L2 penalty counted once.
    with tf.GradientTape() as tape:
        total = 0.0
        for half in (slice(0, 4), slice(4, 8)):
            outs = [m(x[half], training=True) for m in reference]
            own = [objective.student_terms(o, LABELS[half], WEIGHTS) for o in outs]
            for i in range(2):
                terms = dict(own[i][0])
                peers = [{k: tf.stop_gradient(v) for k, v in o.items()} if j != i else o
                         for j, o in enumerate(outs)]
                peer_dists = [d if j == i else tf.stop_gradient(d)
                              for j, (_, d) in enumerate(own)]
                terms.update(objective.mutual_terms(i, [o["logits"] for o in peers],
                                                    peer_dists, WEIGHTS))
                total += tf.reduce_sum(objective.weighted_sum(terms, WEIGHTS)) / 8.0
        total += sum(objective.l2_penalty(m.trainable_variables, 1e-3) for m in reference)
    grads = tape.gradient(total, [m.trainable_variables for m in reference])
    worst = 0.0
    for m_dist, m_ref, g_ref in zip(models, reference, grads):
        for v_dist, v_ref, g in zip(m_dist.trainable_variables, m_ref.trainable_variables, g_ref):
            expected = v_ref.numpy() - 0.01 * g.numpy()
            worst = max(worst, float(np.max(np.abs(v_dist.numpy() - expected))))
    print(json.dumps({"worst": worst}))
""")


def test_mirrored_fit_on_two_replicas_equals_the_global_batch_step():
    """fit under MirroredStrategy (2 logical CPUs, the XLA aligned distance inside) updates the
    weights as the global-batch loss on one device does."""
    done = subprocess.run([sys.executable, "-c", MIRRORED], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    worst = json.loads(done.stdout.strip().splitlines()[-1])["worst"]
    assert worst < 1e-5, worst


def test_real_resnet50_runs_one_train_step():
    models = students(1, seed=0, backbone="resnet50", input_shape=(128, 64, 3))
    before = [v.numpy().copy() for v in models[0].trainable_variables]
    t = trainer.MutualTrainer(models, [keras.optimizers.Adam(1e-3)])
    logs = t.train_step((tf.constant(images(3, (4, 128, 64, 3))), tf.constant([0, 0, 1, 1])))
    assert np.isfinite(float(logs["loss"]))
    changed = sum(not np.array_equal(b, v.numpy())
                  for b, v in zip(before, models[0].trainable_variables))
    assert changed == len(before), "every trainable variable of the real ResNet50 moved"
