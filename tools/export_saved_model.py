"""python -m tools.export_saved_model --workdir runs/smoke --export_dir exports --model_name tf_reid

Exports a training run's student (best checkpoint by default) as a SavedModel in TF Serving's
layout, EXPORT_DIR/<model_name>/<version>/, with warm-up requests built from query images of the
run's TFRecords and a model card. An existing version is never overwritten. Serve it with

  tensorflow_model_server --rest_api_port=8501 --port=8500 \
      --model_name=tf_reid --model_base_path=$PWD/exports/tf_reid
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import os  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    from tf_reid.evaluation.feature_choice import DEFAULT_FEATURE, DEFAULT_FLIP, FEATURES
    from tf_reid.training.workdir import WHICH

    flags.DEFINE_string("workdir", None, "Training workdir (tf_reid.train).")
    flags.DEFINE_string("export_dir", None, "Base folder of exported models (TF Serving's base path's parent).")
    flags.DEFINE_string("model_name", "tf_reid", "Served model name (folder under --export_dir).")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.",
                         lower_bound=1)
    flags.DEFINE_enum("which", "best", list(WHICH), "Checkpoint to export.")
    flags.DEFINE_integer("student", 0, "Which student of a mutual-learning run.",
                         lower_bound=0)
    flags.DEFINE_integer("warmup_images", 4, "Query images in the warm-up requests (0: no warm-up file).",
                         lower_bound=0)
    flags.DEFINE_enum("feature", DEFAULT_FEATURE, list(FEATURES),
                      "The served global feature, as tf_reid.evaluate --feature.")
    flags.DEFINE_bool("flip", DEFAULT_FLIP, "Serve the mean of each image's features and its "
                      "mirror's, as tf_reid.evaluate --flip.")
    flags.DEFINE_integer("max_image_pixels", 4096 * 4096,
                         "Largest image (height x width) served; larger ones fail their request.",
                         lower_bound=1)


def warmup_images(data_dir: str, count: int) -> list[bytes]:
    """The first `count` encoded query images of a TFRecords folder."""
    from tf_reid.data.tfrecords import shard_files
    from tfrecords_builder import features
    from tfrecords_builder.manifest import read_manifest

    import tensorflow as tf

    manifest = read_manifest(data_dir)
    split = "query" if "query" in manifest["splits"] else "train"
    images = []
    for serialized in tf.data.TFRecordDataset(shard_files(data_dir, split, manifest)).take(count):
        images.append(features.parse(serialized)[features.IMAGE].numpy())
    return images


def run() -> list[str]:
    from tf_reid.export import saved_model
    from tf_reid.training import workdir as workdir_lib

    model = workdir_lib.load_student(FLAGS.workdir, FLAGS.which, FLAGS.student)
    config = workdir_lib.read_model_config(FLAGS.workdir)
    card = {"training_data": config.get("data_dir"), "num_training_identities":
            config.get("num_classes"), "checkpoint": os.path.basename(
                workdir_lib.checkpoint_path(FLAGS.workdir, FLAGS.which)), "student": FLAGS.student}
    metrics_file = os.path.join(FLAGS.workdir, workdir_lib.METRICS_FILE)
    if os.path.isfile(metrics_file):
        card["metrics"] = workdir_lib.read_json(metrics_file)
    images = warmup_images(config["data_dir"], FLAGS.warmup_images) if FLAGS.warmup_images else []
    path = saved_model.export(model, FLAGS.export_dir, FLAGS.model_name,
                              FLAGS.version, images, card, FLAGS.max_image_pixels,
                              FLAGS.feature, FLAGS.flip)
    return [f"exported {path}",
            f"serve: tensorflow_model_server --rest_api_port=8501 --port=8500 "
            f"--model_name={FLAGS.model_name} --model_base_path={os.path.abspath(os.path.dirname(path))}"]


def main(argv: list[str]) -> int:
    del argv
    from tf_reid.export.saved_model import ExportError
    from tf_reid.training.workdir import WorkdirError
    from tfrecords_builder.records import DatasetError
    from tools.cli import run_reporting

    return run_reporting(run, errors=(DatasetError, WorkdirError, ExportError))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "export_dir"])
    from tools.cli import parse_flags

    app.run(main, flags_parser=parse_flags)
