"""python -m tools.build_tfrecords --dataset cuhk03 --data_dir ../shared/data/cuhk03 --output_dir data/cuhk03 --allow_missing

Converts a ReID dataset, in its released on-disk layout, into identity-sharded TFRecords plus
`manifest.json`. Protocol options apply to the datasets whose parser takes them; passing one to
another dataset is an error. See `tfrecords_builder/<dataset>.py` for each layout.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

from absl import app, flags  # noqa: E402

from tfrecords_builder import BUILDERS, cuhk03, mars, parser, writer  # noqa: E402
from tfrecords_builder.manifest import split_table  # noqa: E402
from tools.cli import flags_as_keywords, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "Dataset to convert.")
    flags.DEFINE_string("data_dir", None, "Folder of the dataset as released (or its parent).")
    flags.DEFINE_string("output_dir", None,
                        "Folder to create with the TFRecords and manifest.json.")
    flags.DEFINE_integer("records_per_shard", 1000,
                         "Target records per shard (identities are never split).",
                         lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output_dir.")
    flags.DEFINE_bool("skip_bad_images", False,
                      "List undecodable images in the manifest instead of failing.")
    flags.DEFINE_integer("num_workers", None,
                         "Parallel image decoders (default: autotuned over the cores).",
                         lower_bound=1)
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    # Protocol options (PROTOCOL_FLAGS).
    flags.DEFINE_enum("box_type", None, cuhk03.BOX_TYPES, "cuhk03: labeled or detected boxes.")
    flags.DEFINE_enum("protocol", None, cuhk03.PROTOCOLS,
                      "cuhk03: new (767/700) or classic (20 splits).")
    flags.DEFINE_integer("split_index", None, "cuhk03 classic: test split 0..19.",
                         lower_bound=0, upper_bound=19)
    flags.DEFINE_bool("allow_missing", None, "cuhk03: skip split-file entries without an image.")
    flags.DEFINE_enum("cuhk03_source", None, cuhk03.SOURCES, "cuhk03: where the images come from.")
    flags.DEFINE_bool("combine_trainval", None, "msmt17: train on list_train + list_val.")
    flags.DEFINE_enum("mars_gallery", None, mars.GALLERIES, "mars: gallery protocol.")
    flags.DEFINE_integer("split_seed", None, "cuhk01: seed of the train/test identity split.")
    flags.DEFINE_integer("num_train_identities", None, "cuhk01: identities in the train split.",
                         lower_bound=1)


# Protocol flag -> keyword of the dataset's parse(); an unset one keeps the parser's default.
PROTOCOL_FLAGS = {
    "box_type": "box_type", "protocol": "protocol", "split_index": "split_index",
    "allow_missing": "allow_missing", "cuhk03_source": "source",
    "combine_trainval": "combine_trainval", "mars_gallery": "gallery",
    "split_seed": "split_seed", "num_train_identities": "num_train_identities",
}


def summary_lines(manifest: dict, output_dir: str) -> list[str]:
    """A small table of what was written."""
    lines = split_table(manifest)
    if manifest["missing"]:
        lines.append(f"missing (listed by the protocol, absent on disk): {len(manifest['missing'])}")
    if manifest["bad_images"]:
        lines.append(f"bad images skipped: {len(manifest['bad_images'])}")
    lines.append(f"wrote {output_dir}/manifest.json")
    return lines


def convert() -> list[str]:
    parse = parser(FLAGS.dataset)
    options = flags_as_keywords(parse, PROTOCOL_FLAGS, f"--dataset={FLAGS.dataset}",
                                given_only=True)
    parsed = parse(FLAGS.data_dir, **options)
    manifest = writer.build(parsed, FLAGS.output_dir, FLAGS.records_per_shard, FLAGS.overwrite,
                            FLAGS.skip_bad_images, FLAGS.num_workers, FLAGS.progress)
    return summary_lines(manifest, FLAGS.output_dir)


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(convert)


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["dataset", "data_dir", "output_dir"])
    app.run(main, flags_parser=parse_flags)
