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

`--multi_query=mean|max` (Market-1501 converted with its gt_bbox/ folder, split "multi_query")
adds, beside every distance, its multi-query twin "<distance> (multi-query <method>)": each
query's features are pooled over the gt_bbox images of its identity and camera
(`protocols.pool_multi_query`: each image L2-normalised, then averaged or max-pooled), and the
gallery is ranked once per pooled query with the same junk rule. Re-ranking (--rerank) and the
local distance (--local, stripes pooled the same way) apply to the pooled queries too; the
verification view stays per image. The split is extracted with the others (and stored by
--save_features), or read from --features.

Several datasets: `--data_dir=A,B` evaluates the model on each under its own protocol, one table
per dataset, then their mean (eval.json: "datasets": {name: its metrics and source}, "metrics":
the mean). A joint-training workdir (`tf_reid.train --data_dir=A,B`) does that by default: its
datasets that have query and gallery splits. Cross-dataset evaluation (train on one, test on
another) is `--data_dir` naming the other. Features files, --multi_query, --verification and
--tracklet_pooling take one dataset at a time.
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
from tf_reid.evaluation.feature_choice import DEFAULT_FEATURE, DEFAULT_FLIP, FEATURES  # noqa: E402
from tf_reid.evaluation.features_file import SplitFeatures  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder import atomic  # noqa: E402
from tfrecords_builder.manifest import read_manifest  # noqa: E402
from tfrecords_builder.records import MULTI_QUERY, DatasetError  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("workdir", None, "A tf_reid.train workdir (model.json and checkpoints).")
    flags.DEFINE_enum("which", "best", list(workdir_lib.WHICH),
                      "Checkpoint: the best evaluation (falls back to the last) or the last.")
    flags.DEFINE_integer("student", 0, "Which student of a mutual-learning run.",
                         lower_bound=0)
    flags.DEFINE_list("data_dir", None, "TFRecords folder(s), comma-separated, each evaluated "
                      "under its own protocol (default: the training data in model.json).")
    flags.DEFINE_integer("batch_size", 128, "Images per batch during feature extraction.",
                         lower_bound=1)
    flags.DEFINE_enum("feature", DEFAULT_FEATURE, list(FEATURES),
                      "The global feature: pre-BN-neck or post-BN-neck.")
    flags.DEFINE_bool("flip", DEFAULT_FLIP, "Average the features of each image and its mirror.")
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
    flags.DEFINE_enum("multi_query", None, list(protocols.POOLING_METHODS),
                      "Market-1501: also rank each query pooled over the gt_bbox images of its "
                      "identity and camera (split \"multi_query\"), beside the single query.")
    flags.DEFINE_integer("max_rank", 50, "Length of the CMC curve (>= 10).",
                         lower_bound=10)
    flags.DEFINE_string("save_features", None, "Also write the query/gallery features to this "
                        ".npz (and those of split multi_query with --multi_query).")
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
# How to get the multi_query split, for the errors that find none.
MULTI_QUERY_HOWTO = ("convert Market-1501 with its gt_bbox/ folder present (tools.build_tfrecords "
                     "--dataset=market1501)")


def multi_query_name(distance: str, method: str) -> str:
    """The table row and eval.json key of `distance` ranked with pooled queries."""
    return f"{distance} (multi-query {method})"


def data_dirs(workdir: str) -> list[str]:
    """The TFRecords folders to evaluate the workdir's model on: --data_dir, else the training
    data model.json records (of a joint run: each dataset with query and gallery splits)."""
    if FLAGS.data_dir:
        return FLAGS.data_dir
    config = workdir_lib.read_model_config(workdir)
    joint = [t["data_dir"] for t in config.get("training_sets", [])]
    if len(joint) > 1:
        return [d for d in joint if os.path.isdir(d)
                and set(features_file.SPLITS) <= set(read_manifest(d)["splits"])] or joint
    if not config.get("data_dir"):
        raise DatasetError(f"{workdir}/{workdir_lib.MODEL_FILE} names no data_dir; pass --data_dir")
    return [config["data_dir"]]


def load_model(workdir: str) -> Any:
    """The workdir's student that --which and --student name."""
    model = workdir_lib.load_student(workdir, FLAGS.which, FLAGS.student)
    if FLAGS.local and not model.local_branch:
        raise FlagError(f"--local: the model in {workdir} has no local branch (trained without "
                        "the local TriHard, --local_triplet_weight=0)")
    return model


def features_from_model(model: Any, workdir: str, data_dir: str, splits: Sequence[str]
                        ) -> tuple[dict[str, SplitFeatures], dict[str, Any]]:
    """Extracts the features of each named TFRecords split of `data_dir` with the workdir's
    student; returns them by split name and metadata (with the protocol's
    "single_gallery_shot" settings when the manifest calls for them)."""
    height, width = model.image_shape[:2]
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such data_dir (a tools.build_tfrecords output)")
    manifest = read_manifest(data_dir)
    if MULTI_QUERY in splits and MULTI_QUERY not in manifest["splits"]:
        raise FlagError(f"--multi_query: {data_dir} has no '{MULTI_QUERY}' split; "
                        f"{MULTI_QUERY_HOWTO}")
    model_fn = extract.keras_model_fn(model, FLAGS.feature)
    extracted = {split: extract.extract_split(model_fn, data_dir, split, height, width,
                                              FLAGS.batch_size, FLAGS.flip, FLAGS.local,
                                              FLAGS.progress)
                 for split in splits}
    metadata = {"data_dir": os.path.abspath(data_dir), "workdir": os.path.abspath(workdir),
                "which": FLAGS.which, "student": FLAGS.student, "feature": FLAGS.feature,
                "flip": FLAGS.flip,
                "checkpoint": workdir_lib.checkpoint_path(workdir, FLAGS.which),
                "height": height, "width": width}
    single_gallery_shot = protocols.single_gallery_shot(manifest)
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


def multi_query_of_file(path: str, metadata: Mapping[str, Any]) -> SplitFeatures:
    """The "multi_query" split of features file `path`, or a FlagError saying how to get one."""
    held = list(metadata.get("splits", {}))
    if MULTI_QUERY not in held:
        raise FlagError(f"--multi_query: {path} holds no '{MULTI_QUERY}' split (it holds "
                        f"{', '.join(held)}); {MULTI_QUERY_HOWTO}, then save features with "
                        "--workdir --multi_query --save_features")
    return features_file.load(path, MULTI_QUERY)


def pool_queries(query: SplitFeatures, multi_query: SplitFeatures
                 ) -> tuple[SplitFeatures, dict[str, Any], str]:
    """The queries pooled as --multi_query asks, eval.json's "multi_query" summary, and the
    line that prints it."""
    pooled, sizes = protocols.pool_multi_query(query, multi_query, FLAGS.multi_query,
                                               FLAGS.normalize)
    if FLAGS.local and pooled.local is None:
        raise FlagError(f"--local: the '{MULTI_QUERY}' split holds no local features (saved "
                        "without --local)")
    alone = int((sizes == 0).sum())
    summary = {"method": FLAGS.multi_query, "images": len(multi_query),
               "mean_pooled": float(sizes[sizes > 0].mean()) if alone < len(sizes) else 0.0,
               "queries_without_images": alone}
    return pooled, summary, (
        f"multi-query ({FLAGS.multi_query}): {len(multi_query)} {MULTI_QUERY} images, "
        f"{summary['mean_pooled']:.2f} pooled per query (its identity and camera); {alone} of "
        f"{len(sizes)} queries have none and keep their own features")


def settings() -> dict[str, Any]:
    """`matching.distances`' keyword arguments from the flags."""
    return dict(rerank=FLAGS.rerank, normalize=FLAGS.normalize, local_weight=FLAGS.local_weight,
                k1=FLAGS.rerank_k1, k2=FLAGS.rerank_k2, lambda_value=FLAGS.rerank_lambda)


def options() -> dict[str, Any]:
    """eval.json's "options": the flags that shape the metrics."""
    return {"local": FLAGS.local, "rerank": FLAGS.rerank, "normalize": FLAGS.normalize,
            "local_weight": FLAGS.local_weight, "max_rank": FLAGS.max_rank,
            "rerank_k1": FLAGS.rerank_k1, "rerank_k2": FLAGS.rerank_k2,
            "rerank_lambda": FLAGS.rerank_lambda, "tracklet_pooling": FLAGS.tracklet_pooling,
            "multi_query": FLAGS.multi_query}


def distance_names() -> tuple[str, ...]:
    return ("global", "global+local") if FLAGS.local else ("global",)


def evaluate_datasets(folders: Sequence[str]) -> list[str]:
    """The model of --workdir on each of several datasets, each under its own protocol, and the
    mean over them (see the module docstring)."""
    alone = [flag for flag in ("save_features", "multi_query", "verification",
                               "tracklet_pooling") if FLAGS[flag].value]
    if alone:
        raise FlagError(f"--{alone[0]}: evaluate one dataset at a time ({len(folders)} given "
                        "by --data_dir or the joint-training workdir)")
    output = FLAGS.output or os.path.join(FLAGS.workdir, EVAL_FILE)
    atomic.check_target(output, True, folders)
    model = load_model(FLAGS.workdir)
    lines, datasets = [], {}
    for name, data_dir in zip(report.dataset_names(folders), folders):
        extracted, metadata = features_from_model(model, FLAGS.workdir, data_dir,
                                                  features_file.SPLITS)
        query, gallery = (extracted[split] for split in features_file.SPLITS)
        results = report.score_distances(
            matching.distances(query, gallery, distance_names(), **settings()), query, gallery,
            FLAGS.max_rank, metadata.get(protocols.SINGLE_GALLERY_SHOT_KEY))
        datasets[name] = {"metrics": results, "source": metadata}
        lines += [f"== {name}: query {len(query)} images, gallery {len(gallery)} images",
                  *report.metrics_table(results)]
    mean = report.mean_metrics(d["metrics"] for d in datasets.values())
    lines += [f"== mean over the {len(datasets)} datasets", *report.metrics_table(mean)]
    workdir_lib.write_json(output, {"metrics": mean, "datasets": datasets, "options": options(),
                                    "source": {"workdir": os.path.abspath(FLAGS.workdir)}})
    return lines + [f"wrote {output}"]


def evaluate() -> list[str]:
    if bool(FLAGS.features) == bool(FLAGS.workdir):
        raise FlagError("pass exactly one of --workdir and --features")
    if FLAGS.features and FLAGS.data_dir and len(FLAGS.data_dir) > 1:
        raise FlagError("--data_dir: a features file is of one dataset; give one folder")
    if FLAGS.workdir and len(data_dirs(FLAGS.workdir)) > 1:
        return evaluate_datasets(data_dirs(FLAGS.workdir))
    if FLAGS.features and FLAGS.save_features:
        raise FlagError("--save_features needs a model (--workdir), not --features")
    if FLAGS.save_train and not FLAGS.save_features:
        raise FlagError("--save_train needs --save_features")
    if FLAGS.multi_query and FLAGS.tracklet_pooling:
        raise FlagError("--multi_query (Market-1501's image protocol) does not combine with "
                        "--tracklet_pooling (video)")
    if FLAGS.features:
        query, gallery = (features_file.load(FLAGS.features, split)
                          for split in features_file.SPLITS)
        metadata = {**features_file.load_metadata(FLAGS.features),
                    "features": os.path.abspath(FLAGS.features)}
        if FLAGS.local and query.local is None:
            raise FlagError(f"--local: {FLAGS.features} holds no local features (saved "
                            "without --local)")
        multi_query = (multi_query_of_file(FLAGS.features, metadata) if FLAGS.multi_query
                       else None)
        output = FLAGS.output or os.path.splitext(FLAGS.features)[0] + ".eval.json"
    else:
        output = FLAGS.output or os.path.join(FLAGS.workdir, EVAL_FILE)
    figure = output.removesuffix(".json") + "_verification.png" if FLAGS.verification else None
    # Replaced when they exist, but never an input.
    for path in (output, FLAGS.save_features, figure):
        if path:
            atomic.check_target(path, True, [FLAGS.features, *(FLAGS.data_dir or [])])
    if FLAGS.workdir:
        splits = (features_file.SPLITS + ((TRAIN_SPLIT,) if FLAGS.save_train else ())
                  + ((MULTI_QUERY,) if FLAGS.multi_query else ()))
        extracted, metadata = features_from_model(load_model(FLAGS.workdir), FLAGS.workdir,
                                                  data_dirs(FLAGS.workdir)[0], splits)
        query, gallery = (extracted[split] for split in features_file.SPLITS)
        multi_query = extracted.get(MULTI_QUERY)
    lines = [f"query {len(query)} images, gallery {len(gallery)} images"]
    if FLAGS.save_features:
        features_file.save(FLAGS.save_features, extracted, metadata)
        extras = ", ".join(f"split {split}: {len(extracted[split])} images" for split in extracted
                           if split not in features_file.SPLITS)
        lines.append(f"wrote {FLAGS.save_features}" + (f" (with {extras})" if extras else ""))
    if FLAGS.multi_query:
        pooled, pooled_summary, line = pool_queries(query, multi_query)
        lines.append(line)
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
    names = distance_names()
    distances = matching.distances(query, gallery, names, **settings())
    results = report.score_distances(distances, query, gallery, FLAGS.max_rank,
                                     single_gallery_shot)
    if FLAGS.multi_query:
        pooled_results = report.score_distances(
            matching.distances(pooled, gallery, names, **settings()), pooled, gallery,
            FLAGS.max_rank, single_gallery_shot)
        # Each distance's multi-query row right below its single-query row.
        results = {key: row for name in results
                   for key, row in ((name, results[name]),
                                    (multi_query_name(name, FLAGS.multi_query),
                                     pooled_results[name]))}
    lines += report.metrics_table(results)
    recorded = options()
    if single_gallery_shot is not None:
        recorded[protocols.SINGLE_GALLERY_SHOT_KEY] = single_gallery_shot
    evaluation = {"metrics": results, "options": recorded, "source": metadata}
    if FLAGS.multi_query:
        evaluation["multi_query"] = pooled_summary
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
