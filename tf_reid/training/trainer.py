"""The training model: N >= 1 AlignedReID students, each with its own optimizer, one train step.

With one student this is plain AlignedReID training; with two or more, Deep Mutual Learning as
AlignedReID uses it (arXiv 1711.08184, Sec. 3.3). The step is written once for any number of
students: every student's terms come from `objective.student_terms`, the mutual terms from
`objective.mutual_terms`, and because the peers' sides of the mutual terms carry no gradient,
one gradient of the sum of the students' losses gives each student exactly the gradient of its
own loss.

Distribution: `fit` runs `train_step` per replica. Per-example losses are averaged with
`tf.nn.compute_average_loss` over the *global* batch, and the optimizers sum the replicas'
gradients, so the update equals that of the global batch on one device.

Views: the students see one shared augmented batch, or each its own augmented view of the same
images (`call`), so that the mutual terms compare two views of one identity batch.

Generated images (LSRO): with `generated_per_batch=N` each replica's batch is P x K real images
followed by N generated ones (`tf_reid.data.pk`). Every term is computed on the real rows only,
except the ID loss, whose generated rows take LSRO (`identity.lsro_loss`) instead: as in Zheng et
al. 2017 the ID term is averaged over all P x K + N images and the other terms over the P x K
real ones (`objective.average_loss`).
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tf_reid.losses import identity
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training import objective, strategies

STATISTICS = ("active_triplets", "d_ap", "d_an")


class MutualTrainer(keras.Model):
    """Holds the students and their optimizers; `fit` it on (images, labels) PK batches.

    Args:
      students: the AlignedReID models (one for plain training).
      optimizers: one optimizer per student (a mixed_float16 run passes LossScaleOptimizers).
      weights: the objective's weights and margins.
      weight_decay: coupled L2 on every kernel (see `objective.l2_penalty`).
      generated_per_batch: N, the generated images at the end of each replica's batch.
    """

    def __init__(self, students: Sequence[AlignedReID],
                 optimizers: Sequence[keras.optimizers.Optimizer],
                 weights: objective.LossWeights = objective.LossWeights(),
                 weight_decay: float = 0.0, generated_per_batch: int = 0, **kwargs):
        super().__init__(**kwargs)
        if len(students) != len(optimizers):
            raise ValueError(f"{len(students)} students need as many optimizers, "
                             f"got {len(optimizers)}")
        self.students = list(students)
        self.student_optimizers = list(optimizers)
        self.loss_weights = weights
        self.weight_decay = weight_decay
        self.generated_per_batch = generated_per_batch
        names = ["loss", *self._term_names(), *STATISTICS]
        if generated_per_batch and weights.id:
            names.append("lsro")
        if len(self.students) > 1:
            names += [f"loss_{i}" for i in range(len(self.students))]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def _term_names(self) -> list[str]:
        mutual = len(self.students) > 1
        return [name for name in objective.LOSS_TERMS
                if getattr(self.loss_weights, name) and (mutual or not name.startswith("mutual"))]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def build_optimizers(self) -> None:
        """Creates every optimizer's slots now, so a checkpoint can restore them before step 1."""
        for student, optimizer in zip(self.students, self.student_optimizers):
            optimizer.build(student.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skips Keras' symbolic build, which this model does not need (the students are built
        on construction, the optimizers by `build_optimizers`).

        Under a distribution strategy, Keras 3.15's `fit` first mean-reduces a data batch across
        replicas for that build, which fails under MultiWorkerMirroredStrategy for any (images,
        labels) batch (keras-team/keras#20585).
        """
        unbuilt = [layer.name for layer in self._flatten_layers(include_self=False)
                   if not layer.built]
        if unbuilt or not all(o.built for o in self.student_optimizers):
            raise RuntimeError("MutualTrainer.fit: call build_optimizers() first (unbuilt "
                               f"layers: {', '.join(unbuilt) or 'none'})")

    def call(self, images: tf.Tensor, training: bool = False) -> list[dict[str, tf.Tensor]]:
        """Every student's outputs on images [B, H, W, 3] (the same batch for all), or on
        [B, V, H, W, 3] with V = students (`pk.pk_dataset(views=V)`): student i sees view i."""
        if images.shape.rank == 5:
            if images.shape[1] != len(self.students):
                raise ValueError(f"{images.shape[1]} views for {len(self.students)} students")
            return [student(images[:, i], training=training)
                    for i, student in enumerate(self.students)]
        return [student(images, training=training) for student in self.students]

    def train_step(self, data):
        images, labels = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        real = tf.shape(labels)[0] - self.generated_per_batch
        global_batch = tf.shape(labels)[0] * replicas
        global_real = real * replicas
        with tf.GradientTape() as tape:
            everything = self(images, training=True)
            outputs = ([{k: v[:real] for k, v in o.items()} for o in everything]
                       if self.generated_per_batch else everything)
            own = [objective.student_terms(o, labels[:real], self.loss_weights, self._seed())
                   for o in outputs]
            dists = [dist for _, dist in own]
            losses, scaled, all_terms = [], [], []
            for i, (student, optimizer) in enumerate(zip(self.students, self.student_optimizers)):
                terms = dict(own[i][0])
                if len(self.students) > 1:
                    terms.update(objective.mutual_terms(
                        i, [o["logits"] for o in outputs], dists, self.loss_weights))
                if self.generated_per_batch and self.loss_weights.id:
                    terms["lsro"] = identity.lsro_loss(
                        tf.cast(everything[i]["logits"][real:], tf.float32))
                loss = objective.average_loss(terms, self.loss_weights, global_real, global_batch)
                loss += tf.nn.scale_regularization_loss(
                    objective.l2_penalty(student.trainable_variables, self.weight_decay))
                losses.append(loss)
                scaled.append(optimizer.scale_loss(loss))
                all_terms.append(terms)
            total = tf.add_n(scaled)
        variables = [student.trainable_variables for student in self.students]
        gradients = tape.gradient(total, variables)
        for optimizer, grads, weights in zip(self.student_optimizers, gradients, variables):
            optimizer.apply_gradients(zip(grads, weights))
        self._track(losses, all_terms, replicas)
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if strategies.in_cluster(tf.distribute.get_strategy()):
            # Keras 3.15 mean-reduces fit's outputs along axis 0 across workers; scalars have none.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _seed(self) -> tf.Tensor:
        """[2] int32: this step (the first optimizer's iterations, restored on resume) and this
        replica, for metric losses that sample triplets."""
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = self.student_optimizers[0].iterations
        return tf.stack([tf.cast(step, tf.int32), tf.cast(replica_id, tf.int32)])

    def _track(self, losses: list[tf.Tensor], terms: list[dict[str, tf.Tensor]],
               replicas: int) -> None:
        """Updates the trackers with the students' means (per-student totals as loss_i)."""
        n = len(losses)
        # A replica's loss is its share of the global mean; times replicas, its own batch mean.
        per_replica = [loss * replicas for loss in losses]
        self.trackers["loss"].update_state(tf.add_n(per_replica) / n)
        if n > 1:
            for i, loss in enumerate(per_replica):
                self.trackers[f"loss_{i}"].update_state(loss)
        for name in self._term_names() + (["lsro"] if "lsro" in self.trackers else []):
            self.trackers[name].update_state(tf.add_n([tf.reduce_mean(t[name]) for t in terms]) / n)
        stats = {
            "active_triplets": [tf.reduce_mean(tf.cast(t["d_ap"] - t["d_an"] + self.loss_weights.margin
                                                       > 0, tf.float32)) for t in terms],
            "d_ap": [tf.reduce_mean(t["d_ap"]) for t in terms],
            "d_an": [tf.reduce_mean(t["d_an"]) for t in terms],
        }
        for name, values in stats.items():
            self.trackers[name].update_state(tf.add_n(values) / n)
