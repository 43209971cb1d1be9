"""python -m bench.serving [--backbones mobilenet_v2,resnet50] [--batches 1,32] [--rounds 3]

In-process serving throughput of the exported SavedModel against calling the Keras model
directly, in one run. Per backbone, an AlignedReID (random init, 256x128, 751 classes) is
exported with `tf_reid.export.saved_model.export` to a temporary folder and loaded back with
`tf.saved_model.load`; the inputs are real CUHK03 crops from ../shared (JPEG bytes at their
original sizes, about 90 x 300), cycled to fill each batch. Variants, per batch size:

  keras eager        `model(pixels, training=False)["global"]` on uint8 [N, 256, 128, 3]
                     (the baseline: what a user calling the Keras model does)
  keras tf.function  the same call inside one `tf.function`
  embed_pixels       the SavedModel's uint8 signature (resize inside; here a no-op size)
  serving_default    the SavedModel's encoded-image signature: JPEG decode + resize inside,
                     fed the JPEG bytes, i.e. everything a TF Serving client's request costs
                     the model apart from the network

The Keras variants get pixels already decoded and resized; serving_default does that work
itself, so its row is the end-to-end figure. Every variant is warmed up (traced) first, then
the variants are timed in alternating rounds of at least --min_seconds each and the best round
kept. Before timing, the script checks that embed_pixels points the same way as the Keras
model's global features (max abs difference of the unit vectors printed).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import glob  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.common import SHARED_CUHK03  # noqa: E402
from tf_reid.data import augment  # noqa: E402
from tf_reid.export import saved_model  # noqa: E402
from tf_reid.models.aligned_reid import AlignedReID  # noqa: E402
from tools.cli import warnings_only_unless_verbose  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["mobilenet_v2", "resnet50"], "Backbones (keys of BACKBONES).")
flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds over the variants; the best is kept.")
flags.DEFINE_float("min_seconds", 2.0, "Each variant's round lasts at least this long.")
flags.DEFINE_integer("height", 256, "Input height.")
flags.DEFINE_integer("width", 128, "Input width.")
flags.DEFINE_string("images", os.path.join(SHARED_CUHK03, "images_labeled"),
                    "Folder of JPEG crops fed to the models.")

VARIANTS = ("keras eager", "keras tf.function", "embed_pixels", "serving_default")


def read_images(folder: str, count: int) -> list[bytes]:
    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))[:count]
    if not paths:
        raise SystemExit(f"error: {folder}: no .jpg images")
    return [tf.io.read_file(p).numpy() for p in paths]


def unit(v: np.ndarray) -> np.ndarray:
    """[N, D] rows scaled to length 1."""
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def callables(model: AlignedReID, loaded, encoded: list[bytes], pixels: np.ndarray
              ) -> dict[str, Callable[[], object]]:
    """One zero-argument call per variant, on the same batch of images."""
    pixels_t = tf.constant(pixels)
    encoded_t = tf.constant(encoded)
    compiled = tf.function(lambda x: model(x, training=False)["global"])
    embed_pixels = loaded.signatures["embed_pixels"]
    serving_default = loaded.signatures["serving_default"]
    return {
        "keras eager": lambda: model(pixels_t, training=False)["global"].numpy(),
        "keras tf.function": lambda: compiled(pixels_t).numpy(),
        "embed_pixels": lambda: embed_pixels(pixels=pixels_t)["embeddings"].numpy(),
        "serving_default": lambda: serving_default(images=encoded_t)["embeddings"].numpy(),
    }


def time_round(call: Callable[[], object], min_seconds: float) -> float:
    """Seconds per call, over as many calls as fit in `min_seconds` (at least 2)."""
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def measure(backbone: str, batches: list[int], images: list[bytes], export_root: str
            ) -> list[tuple[str, int, str, float]]:
    """(backbone, batch, variant, images/s) rows."""
    model = AlignedReID(751, backbone=backbone, backbone_options={"weights": None},
                        input_shape=(FLAGS.height, FLAGS.width, 3))
    # One forward pass per image on both sides: what the SavedModel adds to the Keras model.
    # The default export (flip averaging, as evaluated) runs the model twice per image.
    path = saved_model.export(model, export_root, backbone, flip=False)
    loaded = tf.saved_model.load(path)
    rows = []
    for batch in batches:
        encoded = [images[i % len(images)] for i in range(batch)]
        pixels = np.stack([augment.decode_and_resize(tf.constant(e), FLAGS.height, FLAGS.width,
                                                     tf.uint8).numpy() for e in encoded])
        calls = callables(model, loaded, encoded, pixels)
        outputs = {name: call() for name, call in calls.items()}  # traces every variant
        # Directions are compared: a random-init MobileNetV2's features are ~1e-11, below
        # l2_normalize's epsilon, so its served embeddings are not unit vectors.
        print(f"{backbone} batch {batch}: max |unit(embed_pixels) - unit(Keras global)| = "
              f"{np.abs(unit(outputs['embed_pixels']) - unit(outputs['keras eager'])).max():.2e}, "
              f"|serving_default - embed_pixels| = "
              f"{np.abs(outputs['serving_default'] - outputs['embed_pixels']).max():.2e}",
              flush=True)
        best = {name: float("inf") for name in calls}
        for _ in range(FLAGS.rounds):
            for name, call in calls.items():
                best[name] = min(best[name], time_round(call, FLAGS.min_seconds))
        rows += [(backbone, batch, name, batch / best[name]) for name in VARIANTS]
    return rows


def main(argv: list[str]) -> int:
    del argv
    warnings_only_unless_verbose()  # TF logs a line per checkpoint / SavedModel write at INFO
    batches = [int(b) for b in FLAGS.batches]
    images = read_images(FLAGS.images, max(batches))
    rows = []
    with tempfile.TemporaryDirectory() as export_root:
        for backbone in FLAGS.backbones:
            rows += measure(backbone, batches, images, export_root)
    print(f"\n{'backbone':12} {'batch':>5}  {'variant':18} {'images/s':>9} {'vs keras eager':>15}")
    for backbone, batch, name, rate in rows:
        base = next(r for b, n, v, r in rows if (b, n, v) == (backbone, batch, "keras eager"))
        print(f"{backbone:12} {batch:5d}  {name:18} {rate:9.1f} {rate / base:14.2f}x")
    print(f"{os.cpu_count()} cores, TensorFlow {tf.__version__}, best of {FLAGS.rounds} rounds "
          f"of >= {FLAGS.min_seconds:g} s per variant")
    return 0


if __name__ == "__main__":
    app.run(main)
