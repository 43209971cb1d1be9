"""python -m tf_reid.evaluate --workdir=runs/smoke --flip --local --rerank --save_features=runs/smoke/features.npz

Evaluates a trained student on the query and gallery splits: rank-1/5/10, mAP and mINP with the
global distance and, with --local, AlignedReID's global + local distance, each also k-reciprocal
re-ranked with --rerank. Prints a table and writes eval.json (default: WORKDIR/eval.json).
`--features=F.npz` evaluates features saved earlier with --save_features, without a model.
The protocol is the one the TFRecords' manifest records: multi-shot, or for CUHK03 converted
with `--protocol classic` single-gallery-shot (10 seeded random gallery samplings; re-ranking
runs on the whole gallery before the sampling). A features file carries it along.

`--verification` adds the verification view (fast-reid's): every query x gallery pair is
"same person?" by thresholding its distance (same-identity same-camera pairs left out), with the
TPR at FPR 1e-4, 1e-3, 1e-2 and the ROC's AUC of each distance that is not re-ranked, under
"verification" in eval.json, and a PNG of the distance histograms and ROCs beside it
(`<output without .json>_verification.png`). Under single-gallery-shot it uses the whole
gallery: the protocol samples the gallery for ranking only. `--save_train` (with
--save_features) also stores the training split's features in the file, as split "train".
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import os  # noqa: E402
from typing import Any, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_reid.evaluation import (extract, features_file, matching, protocols,  # noqa: E402
                                report, verification)
from tf_reid.evaluation.features_file import SplitFeatures  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder import atomic  # noqa: E402
from tfrecords_builder.manifest import read_manifest  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("workdir", None, "A tf_reid.train workdir (model.json and checkpoints).")
    flags.DEFINE_enum("which", "best", list(workdir_lib.WHICH),
                      "Checkpoint: the best evaluation (falls back to the last) or the last.")
    flags.DEFINE_integer("student", 0, "Which student of a mutual-learning run.",
                         lower_bound=0)
    flags.DEFINE_string("data_dir", None, "TFRecords folder (default: the data_dir in model.json).")
    flags.DEFINE_integer("batch_size", 128, "Images per batch during feature extraction.",
                         lower_bound=1)
    flags.DEFINE_bool("flip", False, "Average the features of each image and its mirror.")
    flags.DEFINE_bool("local", False, "Also evaluate the global + local (aligned) distance.")
    flags.DEFINE_bool("rerank", False, "Also evaluate each distance k-reciprocal re-ranked.")
    flags.DEFINE_bool("normalize", True, "L2-normalise the global features before distances.")
    flags.DEFINE_float("local_weight", 1.0, "Weight of the local distance in global + local.",
                       lower_bound=0.0)
    flags.DEFINE_integer("rerank_k1", 20, "Re-ranking k1.", lower_bound=1)
    flags.DEFINE_integer("rerank_k2", 6, "Re-ranking k2.", lower_bound=1)
    flags.DEFINE_float("rerank_lambda", 0.3, "Re-ranking lambda (weight of the original distance).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_enum("tracklet_pooling", None, list(protocols.POOLING_METHODS),
                      "Video datasets (MARS): pool frame features per tracklet before ranking.")
    flags.DEFINE_integer("max_rank", 50, "Length of the CMC curve (>= 10).",
                         lower_bound=10)
    flags.DEFINE_string("save_features", None, "Also write the query/gallery features to this .npz.")
    flags.DEFINE_bool("save_train", False, "With --save_features: also the training split's "
                      "features, as split \"train\".")
    flags.DEFINE_string("features", None, "Evaluate features saved with --save_features instead "
                        "of a model.")
    flags.DEFINE_string("output", None, "Where to write the metrics (default: WORKDIR/eval.json, "
                        "or F.eval.json next to --features).")
    flags.DEFINE_bool("verification", False, "Also TPR at FPR 1e-4/1e-3/1e-2 and AUC of every "
                      "pair's distance, and their histograms and ROCs as a PNG beside --output.")
    flags.DEFINE_bool("progress", True, "Progress bars.")


EVAL_FILE = "eval.json"
TRAIN_SPLIT = "train"  # the TFRecords split --save_train stores, under the same name


def features_from_model(workdir: str, splits: Sequence[str]
                        ) -> tuple[dict[str, SplitFeatures], dict[str, Any]]:
    """Extracts the features of each named TFRecords split with the workdir's student; returns
    them by split name and metadata (with the protocol's "single_gallery_shot" settings when the
    manifest calls for them)."""
    model = workdir_lib.load_student(workdir, FLAGS.which, FLAGS.student)
    if FLAGS.local and not model.local_branch:
        raise FlagError(f"--local: the model in {workdir} has no local branch (trained without "
                        "the local TriHard, --local_triplet_weight=0)")
    height, width = model.image_shape[:2]
    data_dir = FLAGS.data_dir or workdir_lib.read_model_config(workdir).get("data_dir")
    if not data_dir:
        raise DatasetError(f"{workdir}/{workdir_lib.MODEL_FILE} names no data_dir; pass --data_dir")
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such data_dir (a tools.build_tfrecords output)")
    model_fn = extract.keras_model_fn(model)
    extracted = {split: extract.extract_split(model_fn, data_dir, split, height, width,
                                              FLAGS.batch_size, FLAGS.flip, FLAGS.local,
                                              FLAGS.progress)
                 for split in splits}
    metadata = {"data_dir": os.path.abspath(data_dir), "workdir": os.path.abspath(workdir),
                "which": FLAGS.which, "student": FLAGS.student, "flip": FLAGS.flip,
                "checkpoint": workdir_lib.checkpoint_path(workdir, FLAGS.which),
                "height": height, "width": width}
    single_gallery_shot = protocols.single_gallery_shot(read_manifest(data_dir))
    if single_gallery_shot is not None:
        metadata[protocols.SINGLE_GALLERY_SHOT_KEY] = single_gallery_shot
    return extracted, metadata


def verification_report(distances: Mapping[str, np.ndarray], query: SplitFeatures,
                        gallery: SplitFeatures, figure: str
                        ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`verification.summary` of each distance that is not re-ranked, its printable table, and
    the PNG of their histograms and ROCs written to `figure`.

    A re-ranked matrix is left out: it mixes each pair's distance with the overlap of the two
    images' k-reciprocal neighbourhoods in this gallery, a score for ranking one query's
    gallery rather than a distance between two images that a threshold could accept.
    """
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    pairs = {name: verification.pair_distances(matrix, *ids)
             for name, matrix in distances.items() if not name.endswith(matching.RERANK)}
    try:
        summaries = {name: verification.summary(*pair) for name, pair in pairs.items()}
    except ValueError as e:  # no different-identity pair (one identity), or a NaN distance
        raise FlagError(f"--verification: {e}") from None
    verification.save_figure(pairs, figure)
    return summaries, verification.table(summaries) + [f"wrote {figure}"]


def evaluate() -> list[str]:
    if bool(FLAGS.features) == bool(FLAGS.workdir):
        raise FlagError("pass exactly one of --workdir and --features")
    if FLAGS.features and FLAGS.save_features:
        raise FlagError("--save_features needs a model (--workdir), not --features")
    if FLAGS.save_train and not FLAGS.save_features:
        raise FlagError("--save_train needs --save_features")
    if FLAGS.features:
        query, gallery = (features_file.load(FLAGS.features, split)
                          for split in features_file.SPLITS)
        metadata = {**features_file.load_metadata(FLAGS.features),
                    "features": os.path.abspath(FLAGS.features)}
        if FLAGS.local and query.local is None:
            raise FlagError(f"--local: {FLAGS.features} holds no local features (saved "
                            "without --local)")
        output = FLAGS.output or os.path.splitext(FLAGS.features)[0] + ".eval.json"
    else:
        output = FLAGS.output or os.path.join(FLAGS.workdir, EVAL_FILE)
    figure = output.removesuffix(".json") + "_verification.png" if FLAGS.verification else None
    # Replaced when they exist, but never an input.
    for path in (output, FLAGS.save_features, figure):
        if path:
            atomic.check_target(path, True, [FLAGS.features, FLAGS.data_dir])
    if FLAGS.workdir:
        splits = features_file.SPLITS + ((TRAIN_SPLIT,) if FLAGS.save_train else ())
        extracted, metadata = features_from_model(FLAGS.workdir, splits)
        query, gallery = (extracted[split] for split in features_file.SPLITS)
    lines = [f"query {len(query)} images, gallery {len(gallery)} images"]
    if FLAGS.save_features:
        features_file.save(FLAGS.save_features, extracted, metadata)
        lines.append(f"wrote {FLAGS.save_features}" + (
            f" (with split {TRAIN_SPLIT}: {len(extracted[TRAIN_SPLIT])} images)"
            if FLAGS.save_train else ""))
    if FLAGS.tracklet_pooling:
        if (query.tracklets < 0).any() or (gallery.tracklets < 0).any():
            raise FlagError("--tracklet_pooling needs a video dataset (MARS); these images "
                            "have no tracklets")
        query, gallery = (protocols.pool_tracklets(f, FLAGS.tracklet_pooling)
                          for f in (query, gallery))
        lines.append(f"pooled per tracklet ({FLAGS.tracklet_pooling}): query {len(query)}, "
                     f"gallery {len(gallery)} tracklets")
    single_gallery_shot = metadata.get(protocols.SINGLE_GALLERY_SHOT_KEY)
    if single_gallery_shot is not None:
        lines.append(f"single-gallery-shot (CUHK03 classic): {single_gallery_shot['repeats']} "
                     f"random gallery samplings, seed {single_gallery_shot['seed']}")
    distances = matching.distances(
        query, gallery, ("global", "global+local") if FLAGS.local else ("global",),
        rerank=FLAGS.rerank, normalize=FLAGS.normalize, local_weight=FLAGS.local_weight,
        k1=FLAGS.rerank_k1, k2=FLAGS.rerank_k2, lambda_value=FLAGS.rerank_lambda)
    results = report.score_distances(distances, query, gallery, FLAGS.max_rank,
                                     single_gallery_shot)
    lines += report.metrics_table(results)
    options = {"local": FLAGS.local, "rerank": FLAGS.rerank, "normalize": FLAGS.normalize,
               "local_weight": FLAGS.local_weight, "max_rank": FLAGS.max_rank,
               "rerank_k1": FLAGS.rerank_k1, "rerank_k2": FLAGS.rerank_k2,
               "rerank_lambda": FLAGS.rerank_lambda, "tracklet_pooling": FLAGS.tracklet_pooling}
    if single_gallery_shot is not None:
        options[protocols.SINGLE_GALLERY_SHOT_KEY] = single_gallery_shot
    evaluation = {"metrics": results, "options": options, "source": metadata}
    if FLAGS.verification:
        # Every pair of the whole gallery, also under single-gallery-shot: its sampling is
        # part of the ranking protocol, and the pairs are what a threshold would decide.
        evaluation["verification"], table = verification_report(distances, query, gallery,
                                                                 figure)
        lines += table
    workdir_lib.write_json(output, evaluation)
    return lines + [f"wrote {output}"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(evaluate, errors=(DatasetError, workdir_lib.WorkdirError,
                                           features_file.FeaturesFileError))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
