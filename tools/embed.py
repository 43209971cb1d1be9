"""python -m tools.embed --saved_model exports/tf_reid/1 --images 'data/demo/images/query/*.png' --output out/query.npz

Embeds image files with an exported model: in this process (--saved_model), or through a
running TensorFlow Serving (--rest http://localhost:8501 or --grpc localhost:8500, with
--model_name). Writes a features file of one split (`tf_reid.evaluation.features_file`, as
`tf_reid.evaluate --save_features` does), so `tools.build_index` and `tools.search` read it:
global features [N, D] (the L2-normalised embeddings), paths, and pids and camids parsed from
Market-style names (0001_c2...; -1 where a name does not say).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import glob  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_reid.evaluation import features_file  # noqa: E402
from tfrecords_builder import atomic  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("saved_model", None, "Exported version folder (EXPORT_DIR/NAME/VERSION), run in-process.")
    flags.DEFINE_string("rest", None, "TF Serving REST base URL, e.g. http://localhost:8501.")
    flags.DEFINE_string("grpc", None, "TF Serving gRPC target, e.g. localhost:8500.")
    flags.DEFINE_string("model_name", "tf_reid", "Served model name (with --rest/--grpc).")
    flags.DEFINE_integer("version", None, "Served version (with --rest); default: the latest.",
                         lower_bound=1)
    flags.DEFINE_list("images", None, "Image files or glob patterns.")
    flags.DEFINE_integer("batch_size", 32, "Images per request.", lower_bound=1)
    flags.DEFINE_string("output", None, "Where to write the .npz of embeddings and paths.")
    flags.DEFINE_enum("split", "query", list(features_file.SPLITS),
                      "Split name the .npz stores them under.")
    flags.DEFINE_bool("progress", True, "Progress bar.")


class EmbedError(ValueError):
    """Bad input to the embed command (no images, a file that is not an image, ...)."""


def image_files(patterns: list[str]) -> list[str]:
    """The files the patterns name, in the given order (globs sorted); each must exist."""
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise EmbedError(f"{pattern}: matches no file")
        files.extend(matches)
    return files


def read_images(paths: list[str]) -> list[bytes]:
    """Each file's bytes; a missing file, or one that is not an image or does not decode whole
    (a truncated JPEG), is an EmbedError naming it, before any is sent to the model."""
    from tfrecords_builder.images import probe, sniff_format
    from tfrecords_builder.records import DatasetError

    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise EmbedError(f"{path}: no such file")
        with open(path, "rb") as f:
            data = f.read()
        if sniff_format(data) is None:
            raise EmbedError(f"{path}: not a JPEG, PNG, GIF or BMP image")
        try:
            probe(data, path)
        except DatasetError as e:
            raise EmbedError(str(e)) from None
        images.append(data)
    return images


def pid_camid(path: str) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market-style file name (<pid>_c<cam>...), else (-1, -1)."""
    from tfrecords_builder.naming import PID_CAM, stem

    match = PID_CAM.match(stem(path))
    return (int(match.group(1)), int(match.group(2)) - 1) if match else (-1, -1)


def embedder():
    from tf_reid.export import client

    chosen = [name for name in ("saved_model", "rest", "grpc") if FLAGS[name].value]
    if len(chosen) != 1:
        raise EmbedError("give exactly one of --saved_model, --rest, --grpc")
    if FLAGS.saved_model:
        if not os.path.isfile(os.path.join(FLAGS.saved_model, "saved_model.pb")):
            raise EmbedError(f"{FLAGS.saved_model}: no saved_model.pb (an EXPORT_DIR/NAME/VERSION folder)")
        return client.saved_model_embedder(FLAGS.saved_model)
    if FLAGS.rest:
        return client.rest_embedder(FLAGS.rest, FLAGS.model_name, FLAGS.version)
    return client.grpc_embedder(FLAGS.grpc, FLAGS.model_name)


def run() -> list[str]:
    import numpy as np

    from tf_reid.export import client

    atomic.check_target(FLAGS.output, True, FLAGS.images)
    paths = image_files(FLAGS.images)
    embeddings = client.embed_in_batches(embedder(), read_images(paths), FLAGS.batch_size,
                                         FLAGS.progress)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    ids = np.array([pid_camid(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    no_tracklets = np.full(len(paths), -1, np.int64)
    features = features_file.SplitFeatures(
        global_=embeddings, local=None, pids=ids[:, 0], camids=ids[:, 1], paths=np.array(paths),
        tracklets=no_tracklets, frames=no_tracklets)
    features_file.save(FLAGS.output, {FLAGS.split: features})
    return [f"embedded {len(paths)} images ({embeddings.shape[1]}-d) -> {FLAGS.output}"]


def main(argv: list[str]) -> int:
    del argv
    from tools.cli import run_reporting

    return run_reporting(run, errors=(EmbedError,))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["images", "output"])
    from tools.cli import parse_flags

    app.run(main, flags_parser=parse_flags)
