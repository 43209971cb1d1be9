"""python -m tools.build_tfrecords --dataset cuhk03 --data_dir ../shared/data/cuhk03 --output_dir data/cuhk03 --allow_missing

Converts a ReID dataset, in its released on-disk layout, into identity-sharded TFRecords plus
`manifest.json`. Protocol options apply to the datasets whose parser takes them; passing one to
another dataset is an error, and so is leaving out one its parser requires. See
`tfrecords_builder/<dataset>.py` for each layout; your own dataset is a CSV list:
`--dataset=list --data_dir=ROOT --list=FILE.csv` (`tfrecords_builder/list_file.py`).
What a parser finds suspicious but not fatal (`warnings.warn`) is a `warning:` line on stderr.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from typing import Any, Callable

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

from absl import app, flags  # noqa: E402

from tfrecords_builder import BUILDERS, atomic, cuhk03, mars, parser, writer  # noqa: E402
from tfrecords_builder.manifest import split_table  # noqa: E402
from tools.cli import FlagError, flags_as_keywords, parse_flags, run_reporting  # noqa: E402

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
    flags.DEFINE_integer("split_index", None, "cuhk03 classic: test split 0..19; viper, prid2011, "
                         "ilidsvid: split 0..9.", lower_bound=0, upper_bound=19)
    flags.DEFINE_bool("allow_missing", None, "cuhk03: skip split-file entries without an image.")
    flags.DEFINE_enum("cuhk03_source", None, cuhk03.SOURCES, "cuhk03: where the images come from.")
    flags.DEFINE_bool("combine_trainval", None, "msmt17: train on list_train + list_val.")
    flags.DEFINE_enum("mars_gallery", None, mars.GALLERIES, "mars: gallery protocol.")
    flags.DEFINE_integer("split_seed", None,
                         "cuhk01, viper, prid2011: seed of the train/test identity split(s).",
                         lower_bound=0, upper_bound=2**32 - 1)  # numpy RandomState's seeds
    flags.DEFINE_integer("num_train_identities", None, "cuhk01: identities in the train split.",
                         lower_bound=1)
    flags.DEFINE_string("list", None, "list: CSV of path,pid,camid,split rows, paths relative to "
                        "--data_dir (an optional header path,pid,camid,split).")


# Protocol flag -> keyword of the dataset's parse(); an unset one keeps the parser's default.
PROTOCOL_FLAGS = {
    "box_type": "box_type", "protocol": "protocol", "split_index": "split_index",
    "allow_missing": "allow_missing", "cuhk03_source": "source",
    "combine_trainval": "combine_trainval", "mars_gallery": "gallery",
    "split_seed": "split_seed", "num_train_identities": "num_train_identities",
    "list": "list_file",
}


def check_required(parse: Callable[..., Any], options: dict[str, Any], target: str) -> None:
    """Raises a FlagError naming the protocol flag that `parse` requires (a parameter after the
    data folder without a default) and `options` lacks, e.g. --list for --dataset=list."""
    flag_of = {keyword: flag for flag, keyword in PROTOCOL_FLAGS.items()}
    for name, parameter in list(inspect.signature(parse).parameters.items())[1:]:
        if parameter.default is parameter.empty and name not in options:
            raise FlagError(f"{target} needs --{flag_of.get(name, name)}")


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
    # The writer checks its output against the image folder; the list is an input too, and a
    # list kept in an earlier output must not go when --overwrite replaces that output.
    atomic.check_target(os.path.abspath(FLAGS.output_dir), FLAGS.overwrite,
                        [FLAGS.data_dir, FLAGS.list], writer.KIND)
    parse = parser(FLAGS.dataset)
    target = f"--dataset={FLAGS.dataset}"
    options = flags_as_keywords(parse, PROTOCOL_FLAGS, target, given_only=True)
    check_required(parse, options, target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        parsed = parse(FLAGS.data_dir, **options)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
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
