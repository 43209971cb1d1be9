"""python -m bench.cuhk03_subset [--seeds 0,1,2] [--epochs 20] [--split test|val] [--select last|val]

The AlignedReID recipe measured on real pedestrians: baseline (ID + global TriHard), aligned (+
local TriHard on the aligned distance) and mutual (aligned, 2 students by mutual learning) (and,
with --variants, the baseline with each other metric loss of `tf_reid.losses.metric`:
random_triplet, batch_all, contrastive, quadruplet, msml, and msml_l2 on L2-normalised features;
and lsro / aligned_lsro, baseline / aligned with --generated_per_batch GAN samples of
--generated_dir in every batch, trained by LSRO; mutual_views, mutual whose students each see their
own augmentation of the batch, and mutual_views_dml, the same with Deep Mutual Learning's KL weight
1 instead of AlignedReID's 0.01) trained with `tf_reid.training.loop.train` on the CUHK03 crops in
../shared (labeled boxes, new protocol restricted to the images present: train 4,145 images / 427
ids, query 832, gallery 3,200 of 416 ids) from the converted PyTorch ImageNet MobileNetV2
(`torch_padding`), at 256x128, with the same data, epochs, schedule and batches for every variant:
P x K = 16 x 4, flip + pad-crop + random erasing, label smoothing 0.1, Adam 3.5e-4 with linear
warm-up (Bag of Tricks, arXiv 1903.07071) and a x0.1 decay, coupled weight decay 5e-4. Each
variant's final student (student 0 of mutual) is evaluated on the real query/gallery with the
global and the global + local distance, each also re-ranked: rank-1/5/10 and mAP. Prints one table
(variant x seed, then mean and standard deviation over seeds) with training images/s (images seen /
training seconds, evaluation excluded; a mutual step's images count once) and writes
runs/bench_cuhk03/results.json.

Once, reused: TFRecords of the test protocol (data/bench_cuhk03/test), a validation variant
(data/bench_cuhk03/val50-s0: 50 training identities held out as query/gallery by
`tfrecords_builder.validation.carve_validation`, the other 377 train), and the Keras weights
(weights/mobilenet_v2_imagenet.weights.h5). A finished run is not retrained, its evaluation not
redone (runs/bench_cuhk03/<variant>-s<seed>[-val50]/bench_eval.json), so an interrupted bench
continues where it stopped; settings that change a run are refused for an existing workdir
(pass another --runs_dir).

  --split=val   train on the validation variant and report its held-out query/gallery, for
                tuning; the test split is never looked at.
  --select=val  train on the validation variant, evaluate on it every --eval_every epochs, keep
                the best (mAP), and report that checkpoint on the real query/gallery.

Epoch arithmetic (default --epochs=20). One epoch of `loop.train` is one pass over the training
identities: 427 // 16 = 26 steps of 64 images = 1,664 images. Mutual learning costs about two
steps (two students), so the three variants train (1 + 1 + 2) x 20 x 1,664 = 133,120
image-steps per seed; BUILD.md gives what that takes on the machines it was measured on. Each
variant sees 20 x 1,664 = 33,280 images = 8.0 PyTorch epochs of the 4,145 training images; the
PyTorch bar printed under the table trained 23 such epochs (95,335 images), 2.9x more: compare
rank-1/mAP with that in mind, and the images/s directly.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import dataclasses  # noqa: E402
import functools  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.common import SETTINGS_FILE, SHARED_CUHK03  # noqa: E402
from tf_reid.data import augment, pk  # noqa: E402
from tf_reid.evaluation import extract, matching, protocols, report  # noqa: E402
from tf_reid.evaluation.feature_choice import DEFAULT_FLIP  # noqa: E402
from tf_reid.training import loop, objective  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder import cuhk03, validation, writer  # noqa: E402
from tfrecords_builder.manifest import MANIFEST, read_manifest  # noqa: E402
from tools.cli import changed_settings, warnings_only_unless_verbose  # noqa: E402
from tools.convert_torch_weights import convert_weights  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_WEIGHTS = os.path.join(os.path.dirname(REPO), "shared", "weights",
                              "mobilenetv2_imagenet_pytorch.pt")
VARIANTS = {  # name: (loss weights without label smoothing, students)
    "baseline": (objective.LossWeights(local_triplet=0.0), 1),
    "aligned": (objective.LossWeights(), 1),
    "mutual": (objective.LossWeights(), 2),
    # Mutual learning whose two students each see their own augmentation of the batch (issue 21).
    "mutual_views": (objective.LossWeights(), 2),
    # ... with the KL term at Deep Mutual Learning's weight (1, arXiv 1706.00384): at 0.01 the
    # peers barely teach each other.
    "mutual_views_dml": (objective.LossWeights(mutual_id=1.0), 2),
    # The baseline with another global metric loss (margin 0.3 for each): does TriHard win?
    **{name: (objective.LossWeights(local_triplet=0.0, metric_loss=name), 1)
       for name in ("random_triplet", "batch_all", "contrastive", "quadruplet", "msml")},
    # MSML on L2-normalised features (--metric_normalize): unnormalised, it shrinks them (BUILD.md).
    "msml_l2": (objective.LossWeights(local_triplet=0.0, metric_loss="msml",
                                      metric_normalize=True), 1),
    # With --generated_per_batch GAN samples per batch, trained by LSRO (issue 20).
    "lsro": (objective.LossWeights(local_triplet=0.0), 1),
    "aligned_lsro": (objective.LossWeights(), 1),
}
LSRO_VARIANTS = ("lsro", "aligned_lsro")
INDEPENDENT_VIEWS = ("mutual_views", "mutual_views_dml")
RECIPE_VARIANTS = ("baseline", "aligned", "mutual")  # what runs without --variants
SPLITS = ("test", "val")
SELECT = ("last", "val")
# PyTorch Bag-of-Tricks MobileNetV2 baseline on the same data, split, weights and input size.
BAR = {"rank1": 0.457, "mAP": 0.450, "images_per_second": 41.0, "epochs": 23}
EVAL_FILE = "bench_eval.json"
# Settings added after runs of earlier sessions existed: left out of the record at these defaults,
# so that those runs are still recognised and resumed. Keys are paths into the settings dict.
LATER_SETTINGS = {("mutual_views",): "shared", ("losses", "metric_normalize"): False,
                  ("generated_dir",): None, ("generated_per_batch",): 0}
# Settings a finished run may be asked again with different values: they change neither the
# model nor its data stream (`--epochs` continues a shorter run).
REUSABLE = {"workdir", "epochs", "eval_every", "eval_batch_size", "eval_flip", "log_every",
            "progress", "checkpoints_to_keep"}

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", SHARED_CUHK03, "CUHK03 folder (images_labeled/, split files).")
flags.DEFINE_string("torch_weights", SHARED_WEIGHTS, "Legacy PyTorch MobileNetV2 state dict.")
flags.DEFINE_string("weights", os.path.join(REPO, "weights", "mobilenet_v2_imagenet.weights.h5"),
                    "Converted Keras weights (written once from --torch_weights).")
flags.DEFINE_string("tfrecords_dir", os.path.join(REPO, "data", "bench_cuhk03"),
                    "Where the TFRecords of the test and validation variants go (built once).")
flags.DEFINE_string("runs_dir", os.path.join(REPO, "runs", "bench_cuhk03"),
                    "Workdirs <variant>-s<seed>[-val<N>]/ and results.json.")
flags.DEFINE_list("variants", list(RECIPE_VARIANTS), f"Any of {', '.join(VARIANTS)}.")
flags.DEFINE_list("seeds", ["0"], "Training seeds.")
flags.DEFINE_integer("epochs", 20, "Epochs of loop.train (26 steps of 16 x 4 each; see above).")
flags.DEFINE_enum("split", "test", list(SPLITS), "Report on the real query/gallery or on the "
                  "validation identities (tuning).")
flags.DEFINE_enum("select", "last", list(SELECT), "Report the last epoch, or the best on "
                  "the validation identities (then trains on the validation variant).")
flags.DEFINE_integer("val_identities", 50, "Training identities held out for validation.")
flags.DEFINE_integer("val_seed", 0, "Seed choosing the held-out identities.")
flags.DEFINE_integer("eval_every", 5, "--select=val: evaluate on validation every N epochs.")
flags.DEFINE_integer("height", 256, "Input height.")
flags.DEFINE_integer("width", 128, "Input width.")
flags.DEFINE_integer("num_identities", 16, "P.")
flags.DEFINE_integer("num_instances", 4, "K.")
flags.DEFINE_float("learning_rate", 3.5e-4, "Adam's base rate.")
flags.DEFINE_float("warmup_epochs", 2.0, "Linear warm-up from 1% of the rate, in epochs.")
flags.DEFINE_list("decay_epochs", [], "Epochs of the x0.1 decay (default: 3/4 of --epochs).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the ID loss.")
flags.DEFINE_bool("eval_flip", DEFAULT_FLIP, "Average the features of each image and its mirror.")
flags.DEFINE_integer("eval_batch_size", 128, "Images per batch of feature extraction.")
flags.DEFINE_bool("progress", True, "Progress bars.")
flags.DEFINE_string("generated_dir", os.path.join(REPO, "data", "cuhk03_gan"),
                    "LSRO variants: tools.generate_gan_samples output (from a tools.train_gan "
                    "run on the training split).")
flags.DEFINE_integer("generated_per_batch", 16, "LSRO variants: generated images per batch.")


def build_data(output_dir: str, carve: bool) -> str:
    """The TFRecords of the test protocol, or of its validation variant, built unless present."""
    name = f"val{FLAGS.val_identities}-s{FLAGS.val_seed}" if carve else "test"
    path = os.path.join(output_dir, name)
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        parsed = cuhk03.parse(FLAGS.data_dir, box_type="labeled", protocol="new",
                              allow_missing=True)
        if carve:
            parsed = validation.carve_validation(parsed, FLAGS.val_identities, FLAGS.val_seed)
        print(f"building {path}", file=sys.stderr, flush=True)
        writer.build(parsed, path, progress=FLAGS.progress)
    return path


def ensure_weights() -> str:
    if not os.path.isfile(FLAGS.weights):
        for line in convert_weights(FLAGS.torch_weights, FLAGS.weights, overwrite=False):
            print(line, file=sys.stderr)
    return os.path.abspath(FLAGS.weights)


def train_config(variant: str, seed: int, data_dir: str, workdir: str, weights: str,
                 eval_every: int) -> loop.TrainConfig:
    losses, students = VARIANTS[variant]
    decay = [int(e) for e in FLAGS.decay_epochs] or [round(0.75 * FLAGS.epochs)]
    return loop.TrainConfig(
        data_dirs=(data_dir,), workdir=workdir,
        model=dict(backbone="mobilenet_v2",
                   backbone_options={"weights": weights, "torch_padding": True},
                   input_shape=(FLAGS.height, FLAGS.width, 3)),
        students=students, num_identities=FLAGS.num_identities,
        num_instances=FLAGS.num_instances,
        mutual_views="independent" if variant in INDEPENDENT_VIEWS else "shared",
        augmentation=augment.AugmentConfig(flip=True, pad=10, erasing_probability=0.5),
        losses=dataclasses.replace(losses, label_smoothing=FLAGS.label_smoothing),
        weight_decay=5e-4, learning_rate=FLAGS.learning_rate, decay_epochs=tuple(decay),
        decay_factor=0.1, warmup_epochs=FLAGS.warmup_epochs, warmup_factor=0.01,
        epochs=FLAGS.epochs, seed=seed, eval_every=eval_every,
        eval_batch_size=FLAGS.eval_batch_size, eval_flip=FLAGS.eval_flip, progress=FLAGS.progress,
        **({"generated_dir": os.path.abspath(FLAGS.generated_dir),
            "generated_per_batch": FLAGS.generated_per_batch} if variant in LSRO_VARIANTS else {}))


def check_settings(config: loop.TrainConfig) -> bool:
    """Records the run's settings in its workdir; refuses a workdir trained with other ones.

    Returns:
      Whether the workdir already held this run (which then continues from its last checkpoint).
    """
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    # Recorded as before joint training existed (one data_dir, no sampling), so that runs of
    # earlier sessions are still recognised and resumed.
    settings["data_dir"] = settings.pop("data_dirs")[0]
    del settings["sampling"]
    for *parents, key in LATER_SETTINGS:
        record = functools.reduce(dict.__getitem__, parents, settings)
        if record[key] == LATER_SETTINGS[(*parents, key)]:
            del record[key]
    path = os.path.join(config.workdir, SETTINGS_FILE)
    existed = os.path.isfile(path)
    if existed:
        changed = changed_settings(workdir_lib.read_json(path), settings, REUSABLE)
        if changed:
            raise workdir_lib.WorkdirError(
                f"{config.workdir}: trained with other settings ({', '.join(changed)}); pass "
                "another --runs_dir")
    elif os.path.isdir(config.workdir) and os.listdir(config.workdir):
        raise workdir_lib.WorkdirError(
            f"{config.workdir}: not a bench workdir (no {SETTINGS_FILE})")
    os.makedirs(config.workdir, exist_ok=True)
    workdir_lib.write_json(path, settings)
    return existed


def training_time(workdir: str, steps: int, batch: int) -> dict[str, float]:
    """Epochs, images and seconds of training, from the per-epoch images/s in the run's logs.

    `callbacks.ProgressBar` times each epoch from its start to its last step, before the
    epoch-end evaluation and checkpoint, and `ScalarLogger` logs it as train/images_per_second
    at step = optimizer iterations; a resumed run's epochs are read from all event files.
    """
    per_step: dict[int, float] = {}
    for path in sorted(glob.glob(os.path.join(workdir, workdir_lib.LOGS, "events.out.tfevents.*"))):
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(raw)
            for value in event.summary.value:
                if value.tag == "train/images_per_second":
                    per_step[int(event.step)] = float(tf.make_ndarray(value.tensor))
    epochs = len(per_step)
    images = epochs * steps * batch
    seconds = sum(steps * batch / ips for ips in per_step.values() if ips > 0)
    return {"epochs": epochs, "images": images, "seconds": seconds,
            "images_per_second": images / seconds if seconds else 0.0}


def evaluate(workdir: str, which: str, data_dir: str) -> dict[str, Any]:
    """Student 0's metrics on data_dir's query/gallery; cached in the workdir per checkpoint."""
    checkpoint = workdir_lib.checkpoint_path(workdir, which)
    key = {"checkpoint": os.path.basename(checkpoint), "which": which,
           "data_dir": os.path.abspath(data_dir), "flip": FLAGS.eval_flip}
    path = os.path.join(workdir, EVAL_FILE)
    if os.path.isfile(path):
        cached = workdir_lib.read_json(path)
        if cached["key"] == key:
            return cached
    keras.backend.clear_session()
    model = workdir_lib.load_student(workdir, which)
    model_fn = extract.keras_model_fn(model)
    start = time.perf_counter()
    # A baseline has no local branch, so no global + local rows.
    query, gallery = (extract.extract_split(model_fn, data_dir, split, FLAGS.height, FLAGS.width,
                                            FLAGS.eval_batch_size, flip=FLAGS.eval_flip,
                                            with_local=model.local_branch,
                                            progress=FLAGS.progress)
                      for split in ("query", "gallery"))
    metrics = report.evaluate_features(
        query, gallery, local=model.local_branch, rerank=True,
        single_gallery_shot=protocols.single_gallery_shot(read_manifest(data_dir)))
    result = {"key": key, "metrics": metrics, "seconds": time.perf_counter() - start}
    workdir_lib.write_json(path, result)
    return result


def run_one(variant: str, seed: int, train_dir: str, eval_dir: str, weights: str
            ) -> dict[str, Any]:
    suffix = "" if train_dir.endswith(os.sep + "test") else "-" + os.path.basename(train_dir)
    workdir = os.path.join(FLAGS.runs_dir, f"{variant}-s{seed}{suffix}")
    select_on_val = FLAGS.select == "val"
    config = train_config(variant, seed, train_dir, workdir, weights,
                          FLAGS.eval_every if select_on_val else -1)
    resume = check_settings(config)
    keras.backend.clear_session()
    print(f"== {variant} seed {seed}: {workdir}", file=sys.stderr, flush=True)
    loop.train(config, resume=resume)
    manifest = read_manifest(train_dir)
    steps = pk.steps_per_epoch(manifest["splits"]["train"]["identities"], FLAGS.num_identities)
    train = training_time(workdir, steps, FLAGS.num_identities * FLAGS.num_instances
                          + config.generated_per_batch)
    train["train_images"] = manifest["splits"]["train"]["images"]
    train["train_identities"] = manifest["splits"]["train"]["identities"]
    evaluation = evaluate(workdir, "best" if select_on_val else "last", eval_dir)
    return {"variant": variant, "seed": seed, "workdir": os.path.relpath(workdir, REPO),
            "train": train, "eval_seconds": evaluation["seconds"],
            "checkpoint": evaluation["key"]["checkpoint"], "metrics": evaluation["metrics"]}


METRICS = (("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("mAP", "mAP"))


def table(results: list[dict[str, Any]]) -> list[str]:
    """variant x seed rows (one line per distance), then mean +- std over seeds per variant."""
    distances = list(matching.VARIANTS)
    head = (f"{'variant':14} {'seed':>4} {'epochs':>6} {'images':>8} {'train s':>8} {'img/s':>6}"
            f"  {'distance':20}" + "".join(f" {t:>6}" for t, _ in METRICS))
    lines = [head, "-" * len(head)]
    for r in results:
        t = r["train"]
        left = (f"{r['variant']:14} {r['seed']:4d} {t['epochs']:6d} {t['images']:8,d} "
                f"{t['seconds']:8.0f} {t['images_per_second']:6.1f}")
        for i, name in enumerate(d for d in distances if d in r["metrics"]):
            m = r["metrics"][name]
            lines.append((left if i == 0 else " " * len(left)) + f"  {name:20}"
                         + "".join(f" {100 * m[k]:6.1f}" for _, k in METRICS))
    lines.append("-" * len(head))
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        ips = np.array([r["train"]["images_per_second"] for r in rows])
        left = f"{variant:14} {'mean':>4} {'':6} {'':8} {'':8} {ips.mean():6.1f}"
        for i, name in enumerate(d for d in distances if all(d in r["metrics"] for r in rows)):
            cells = []
            for _, k in METRICS:
                values = 100 * np.array([r["metrics"][name][k] for r in rows])
                spread = values.std(ddof=1) if len(values) > 1 else 0.0
                cells.append(f" {values.mean():5.1f}±{spread:.1f}")
            lines.append((left if i == 0 else " " * len(left)) + f"  {name:20}" + "".join(cells))
    return lines


def main(argv: list[str]) -> int:
    del argv
    warnings_only_unless_verbose()  # TF logs a line per checkpoint / SavedModel write at INFO
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"--variants: unknown {', '.join(unknown)} "
                             f"(one of {', '.join(VARIANTS)})")
    seeds = [int(s) for s in FLAGS.seeds]
    test_dir = build_data(FLAGS.tfrecords_dir, carve=False)
    val_dir = build_data(FLAGS.tfrecords_dir, carve=True)
    weights = ensure_weights()
    train_dir = val_dir if "val" in (FLAGS.split, FLAGS.select) else test_dir
    eval_dir = val_dir if FLAGS.split == "val" else test_dir

    results = []
    try:
        for variant in FLAGS.variants:
            for seed in seeds:
                results.append(run_one(variant, seed, train_dir, eval_dir, weights))
    except workdir_lib.WorkdirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    manifest = read_manifest(train_dir)
    evaluated = read_manifest(eval_dir)["splits"]
    train_images = manifest["splits"]["train"]["images"]
    print(f"CUHK03 labeled, new protocol (../shared subset), MobileNetV2 (converted PyTorch "
          f"ImageNet weights), {FLAGS.height}x{FLAGS.width}, P x K = {FLAGS.num_identities} x "
          f"{FLAGS.num_instances}, {FLAGS.epochs} epochs, {os.cpu_count()} cores")
    print(f"trained on {os.path.relpath(train_dir, REPO)}: {train_images:,} images / "
          f"{manifest['splits']['train']['identities']} ids; reported on "
          f"{os.path.relpath(eval_dir, REPO)} query {evaluated['query']['images']:,} / gallery "
          f"{evaluated['gallery']['images']:,}; "
          f"{'best on validation' if FLAGS.select == 'val' else 'last epoch'}, student 0; "
          "metrics in %")
    for line in table(results):
        print(line)
    images = results[0]["train"]["images"] if results else 0
    print(f"images seen per run: {images:,} = {images / train_images:.1f} passes over the "
          f"{train_images:,} training images (PyTorch epochs); mutual trains 2 students on them")
    print(f"bar: PyTorch Bag-of-Tricks MobileNetV2 baseline, same data, split, weights and input "
          f"size: rank-1 {100 * BAR['rank1']:.1f}%, mAP {100 * BAR['mAP']:.1f}% (global, no "
          f"re-ranking) at {BAR['images_per_second']:.0f} training images/s on this CPU, "
          f"{BAR['epochs']} epochs ({BAR['epochs'] * 4145:,} images)")
    output = os.path.join(FLAGS.runs_dir, "results.json")
    workdir_lib.write_json(output, {
        "flags": {name: FLAGS[name].value for name in (
            "variants", "seeds", "epochs", "split", "select", "val_identities", "val_seed",
            "height", "width", "num_identities", "num_instances", "learning_rate",
            "warmup_epochs", "decay_epochs", "label_smoothing", "eval_flip")},
        "train_data": os.path.relpath(train_dir, REPO),
        "eval_data": os.path.relpath(eval_dir, REPO),
        "cpu_count": os.cpu_count(), "bar": BAR, "runs": results})
    print(f"wrote {os.path.relpath(output, REPO)}")
    return 0


if __name__ == "__main__":
    app.run(main)
