"""python -m bench.train_sides {tf|torch} CONFIG_JSON: one side of `bench.train_vs_torch`.

A long-lived worker that builds one backbone's training steps, then answers JSON lines on stdin,
{"row": name, "steps": n}, with {"seconds": s, "loss": mean loss of those steps} on stdout; it
exits at end of input. `bench.train_vs_torch` runs the tf side with .venv's Python and the torch
side with .venv-bench's, which holds only torch, torchvision and NumPy: so this module imports
neither framework at the top, and each side's functions import theirs.

tf side: `bench.train_step.build_trainer` (the MutualTrainer as `tf_reid.training.loop.train`
builds it) per objective of `bench.train_step.OBJECTIVES`, each step timed through `fit` on the
batch repeated from memory, as `bench.train_step` times it but with tf.data's autotuning off
(see `tf_runners`).

torch side, a minimal PyTorch reference of the same recipe (float32, channels_last):
  network   torchvision MobileNetV2 / ResNet50 (last stride 1, as tf-reid's default) feature
            maps, random init; global average pooling -> the global feature g (pre-BN);
            BatchNorm1d neck with its shift frozen at zero (tf-reid: center=False);
            Linear classifier without bias. Images enter as uint8 and are scaled and
            ImageNet-standardised inside the step, as tf-reid's model does. No local branch.
  loss      per student: label-smoothed (0.1) cross-entropy + batch-hard triplet (margin 0.3)
            on the Euclidean distances of g; with two students, each adds
            0.01 KL(p_peer || p) + 0.001 mean (D - D_peer)^2 against the other's detached
            outputs (`tf_reid.training.objective.mutual_terms`), and one backward of the sum
            gives each network the gradient of its own loss.
  optimizer one Adam (lr 3.5e-4) per network, coupled weight decay 5e-4 on the kernels only
            (parameters of rank >= 2), which is where tf-reid's `objective.l2_penalty` puts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from typing import Any, Callable

import numpy as np

# tf-reid objective -> the PyTorch step it is compared with (the reference has no local branch).
TORCH_STEP_FOR = {"baseline": "baseline", "aligned": "baseline", "mutual": "mutual"}
TORCH_STUDENTS = {"baseline": 1, "mutual": 2}
BACKBONES = ("mobilenet_v2", "resnet50")

# The PyTorch reference's recipe (see the module docstring).
LABEL_SMOOTHING = 0.1
MARGIN = 0.3
LEARNING_RATE = 3.5e-4
WEIGHT_DECAY = 5e-4
MUTUAL_WEIGHTS = {"classification": 0.01, "metric": 0.001}  # tf_reid.losses.mutual's
# tf_reid.data.augment's normalisation: (image / 255 - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Squared distances at or below this are distance 0 with a zero gradient (tf_reid.losses.distance).
_ZERO_SQUARED = 1e-12

Runner = Callable[[int], float]  # runs n steps, returns their mean loss


def pk_batch(num_identities: int, num_instances: int, height: int, width: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded P x K batch: ([P*K, H, W, 3] uint8 images, [P*K] int64 pids 0 0 0 0 1 1 ...)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_identities * num_instances, height, width, 3),
                          dtype=np.uint8)
    pids = np.repeat(np.arange(num_identities, dtype=np.int64), num_instances)
    return images, pids


def batch_digest(images: np.ndarray, pids: np.ndarray) -> str:
    """SHA-256 of the batch, so the parent can tell both sides train on the same bytes."""
    return hashlib.sha256(images.tobytes() + pids.tobytes()).hexdigest()


# --- tf side -------------------------------------------------------------------------------------

def tf_runners(config: dict[str, Any], images: np.ndarray, pids: np.ndarray
               ) -> tuple[dict[str, Runner], dict[str, Any]]:
    """{objective: runner} for config["rows"] (keys of bench.train_step.OBJECTIVES), and info."""
    import tf_reid  # noqa: F401  # first: TensorFlow's environment as tf_reid's commands have it
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
    import keras

    from bench import train_step

    # build_trainer reads the classifier width and input size from train_step's flags.
    train_step.FLAGS([sys.argv[0], f"--num_classes={config['num_classes']}",
                      f"--height={config['height']}", f"--width={config['width']}"])
    keras.utils.set_random_seed(config["seed"])
    # One constant batch leaves tf.data nothing to tune, and with autotuning on a `fit` call does
    # not return before the autotuning thread's next wake-up, whose period starts at 10 ms and
    # doubles: every timed call would last 10 ms * (2^n - 1), not its steps. A real run makes one
    # iterator for all its epochs and pays that at most once.
    options = tf.data.Options()
    options.autotune.enabled = False
    data = tf.data.Dataset.from_tensors((images, pids)).repeat().with_options(options)

    def runner(model: keras.Model) -> Runner:
        def run(steps: int) -> float:
            history = model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            return float(history.history["loss"][-1])  # the mean over this call's steps
        return run

    runners = {}
    for name in config["rows"]:
        weights, num_students = train_step.OBJECTIVES[name]
        runners[name] = runner(train_step.build_trainer(config["backbone"], weights,
                                                        num_students, f"{name}_"))
    info = {"framework": f"tensorflow {tf.__version__}",
            "threads": tf.config.threading.get_intra_op_parallelism_threads()}
    return runners, info


# --- torch side ----------------------------------------------------------------------------------

def torch_features(backbone: str):
    """torchvision `backbone` without pooling and head: [B, 3, H, W] -> [B, C, h, w], and C."""
    import torch
    import torchvision

    if backbone == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(weights=None).features, 1280
    if backbone == "resnet50":
        net = torchvision.models.resnet50(weights=None)
        # Last stride 1, as tf-reid's resnet50 by default (Bag of Tricks): torchvision strides
        # conv5's first block in its 3x3 conv and its projection shortcut.
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        return torch.nn.Sequential(*list(net.children())[:-2]), 2048
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def torch_network(backbone: str, num_classes: int):
    """{features, neck, classifier} of one student, in channels_last."""
    import torch

    features, channels = torch_features(backbone)
    neck = torch.nn.BatchNorm1d(channels)
    neck.bias.requires_grad_(False)  # Bag of Tricks' BN-neck: shift frozen at zero
    net = torch.nn.ModuleDict({"features": features, "neck": neck,
                               "classifier": torch.nn.Linear(channels, num_classes, bias=False)})
    return net.to(memory_format=torch.channels_last).train()


def torch_forward(net, images):
    """[B, 3, H, W] uint8 (channels_last) -> (global [B, C] pre-BN, logits [B, num_classes])."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = ((images.float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
    global_feature = net["features"](x).mean(dim=(2, 3))
    return global_feature, net["classifier"](net["neck"](global_feature))


def torch_pairwise_distance(x):
    """[B, D] -> [B, B] Euclidean distances, zero (with zero gradient) where rows coincide."""
    import torch

    squared = (x * x).sum(dim=1)
    squared = (squared[:, None] + squared[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    nonzero = squared > _ZERO_SQUARED
    safe = torch.where(nonzero, squared, torch.ones_like(squared))
    return torch.where(nonzero, safe.sqrt(), torch.zeros_like(squared))


def torch_batch_hard_triplet(dist, pids, margin: float):
    """[B, B] distances, [B] pids -> [B] max(d(a, hardest p) - d(a, hardest n) + margin, 0).

    For P x K batches (P >= 2, K >= 2): every anchor has a positive and a negative.
    """
    import torch

    same = pids[:, None] == pids[None, :]
    is_self = torch.eye(len(pids), dtype=torch.bool)
    d_ap = dist.masked_fill(~same | is_self, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return torch.relu(d_ap - d_an + margin)


def torch_step(students, optimizers, images, pids) -> float:
    """One training step of every student on the batch; returns the students' mean loss."""
    import torch
    import torch.nn.functional as F

    outputs = [torch_forward(net, images) for net in students]
    dists = [torch_pairwise_distance(global_feature) for global_feature, _ in outputs]
    total = 0.0
    for i, (_, logits) in enumerate(outputs):
        loss = (F.cross_entropy(logits, pids, label_smoothing=LABEL_SMOOTHING)
                + torch_batch_hard_triplet(dists[i], pids, MARGIN).mean())
        peers = [j for j in range(len(students)) if j != i]
        for j in peers:
            target = F.log_softmax(outputs[j][1].detach(), dim=1)
            kl = (target.exp() * (target - F.log_softmax(logits, dim=1))).sum(dim=1).mean()
            metric = (dists[i] - dists[j].detach()).square().mean()
            loss = loss + (MUTUAL_WEIGHTS["classification"] * kl
                           + MUTUAL_WEIGHTS["metric"] * metric) / len(peers)
        total = total + loss
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    total.backward()
    for optimizer in optimizers:
        optimizer.step()
    return total.item() / len(students)


def torch_optimizer(net):
    """Adam with coupled weight decay on the kernels (rank >= 2), none on biases and BN."""
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    return torch.optim.Adam([{"params": [p for p in params if p.ndim >= 2],
                              "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=LEARNING_RATE)


def torch_runners(config: dict[str, Any], images: np.ndarray, pids: np.ndarray
                  ) -> tuple[dict[str, Runner], dict[str, Any]]:
    """{step: runner} for config["rows"] (keys of TORCH_STUDENTS), and info."""
    import torch
    import torchvision

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    # NHWC memory seen as NCHW is channels_last already: no copy, as tf-reid takes NHWC.
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    labels = torch.from_numpy(pids)

    def runner(students) -> Runner:
        optimizers = [torch_optimizer(net) for net in students]

        def run(steps: int) -> float:
            return sum(torch_step(students, optimizers, batch, labels)
                       for _ in range(steps)) / steps
        return run

    runners = {name: runner([torch_network(config["backbone"], config["num_classes"])
                             for _ in range(TORCH_STUDENTS[name])]) for name in config["rows"]}
    info = {"framework": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
            "threads": torch.get_num_threads(), "triplet_check": check_torch_triplet()}
    return runners, info


def numpy_batch_hard_triplet(features: np.ndarray, pids: np.ndarray, margin: float) -> np.ndarray:
    """The obvious loop: [B, D] features, [B] pids -> [B] batch-hard triplet losses (float64)."""
    losses = []
    for a in range(len(pids)):
        d = [float(np.sqrt(np.sum((features[a] - features[j]) ** 2))) for j in range(len(pids))]
        d_ap = max(d[j] for j in range(len(pids)) if pids[j] == pids[a] and j != a)
        d_an = min(d[j] for j in range(len(pids)) if pids[j] != pids[a])
        losses.append(max(d_ap - d_an + margin, 0.0))
    return np.array(losses)


def check_torch_triplet() -> dict[str, float]:
    """Largest errors of the torch triplet against a hand example and against the NumPy loop."""
    import torch

    # 1-D points 0 5 | 3 4: anchor 0: d_ap 5, d_an 3 -> 2.3; anchor 5: 5 - 1 -> 4.3;
    # anchor 3: 1 - 2 -> 0; anchor 4: 1 - 1 -> 0.3.
    hand = torch.tensor([[0.0, 0.0], [5.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    hand_pids = torch.tensor([0, 0, 1, 1])
    got = torch_batch_hard_triplet(torch_pairwise_distance(hand), hand_pids, MARGIN)
    hand_error = float((got - torch.tensor([2.3, 4.3, 0.0, 0.3])).abs().max())

    rng = np.random.default_rng(1)
    features = rng.normal(size=(12, 5)).astype(np.float32)
    pids = np.repeat(np.arange(4), 3)
    got = torch_batch_hard_triplet(torch_pairwise_distance(torch.from_numpy(features)),
                                   torch.from_numpy(pids), MARGIN).numpy()
    loop_error = float(np.abs(got - numpy_batch_hard_triplet(features.astype(np.float64), pids,
                                                              MARGIN)).max())
    return {"hand_max_error": hand_error, "numpy_loop_max_error": loop_error}


# --- the worker ----------------------------------------------------------------------------------

SIDES = {"tf": tf_runners, "torch": torch_runners}


def serve(side: str, config: dict[str, Any]) -> None:
    """Builds the side's runners, says so, then times each request until stdin closes."""
    # Keep the protocol's stdout to ourselves: anything a library prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(message: dict[str, Any]) -> None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        protocol.write(json.dumps({**message, "peak_rss_mb": peak_mb}) + "\n")

    start = time.perf_counter()
    images, pids = pk_batch(config["num_identities"], config["num_instances"], config["height"],
                            config["width"], config["seed"])
    runners, info = SIDES[side](config, images, pids)
    reply({**info, "batch_sha256": batch_digest(images, pids),
           "build_s": time.perf_counter() - start})
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        loss = runners[request["row"]](request["steps"])
        reply({"seconds": time.perf_counter() - start, "loss": loss})


if __name__ == "__main__":
    if sys.argv[1] == "tf":
        from tf_reid.quiet import quiet_tensorflow

        quiet_tensorflow(sys.argv)
    serve(sys.argv[1], json.loads(sys.argv[2]))
