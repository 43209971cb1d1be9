"""python -m tools.generate_synthetic --output_dir data/synthetic

Writes the synthetic pedestrian dataset (Market-1501 layout, see `tfrecords_builder/synthetic.py`)
that `make demo` and the tests use when no real dataset is at hand. Same flags, same bytes.
Does not import TensorFlow, so it starts fast.
"""

from __future__ import annotations

import inspect

from absl import app, flags

from tfrecords_builder import synthetic
from tools.cli import parse_flags, run_reporting

FLAGS = flags.FLAGS
_DEFAULTS = {k: p.default for k, p in inspect.signature(synthetic.generate).parameters.items()}


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("output_dir", None,
                        "Folder to create (refused if it exists, see --overwrite).")
    flags.DEFINE_integer("num_identities", _DEFAULTS["num_identities"],
                         "Identities, train + test.", lower_bound=2)
    flags.DEFINE_integer("num_train_identities", _DEFAULTS["num_train_identities"],
                         "Training identities (default: half of --num_identities).",
                         lower_bound=1)
    flags.DEFINE_integer("num_cameras", _DEFAULTS["num_cameras"], "Cameras; every identity is seen "
                         "by all of them.", lower_bound=2)
    flags.DEFINE_integer("images_per_identity_per_camera",
                         _DEFAULTS["images_per_identity_per_camera"],
                         "Images of each identity in each camera (test: 1 query, the rest "
                         "gallery).", lower_bound=2)
    flags.DEFINE_integer("height", _DEFAULTS["height"], "Image height in pixels.", lower_bound=8)
    flags.DEFINE_integer("width", _DEFAULTS["width"], "Image width in pixels.", lower_bound=8)
    flags.DEFINE_integer("seed", _DEFAULTS["seed"], "Random seed: same seed, same bytes.")
    flags.DEFINE_enum("image_format", _DEFAULTS["image_format"], sorted(synthetic.IMAGE_FORMATS),
                      "Image file format.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing synthetic output_dir.")
    flags.register_multi_flags_validator(
        ["num_identities", "num_train_identities"],
        lambda f: (f["num_train_identities"] is None
                   or f["num_train_identities"] < f["num_identities"]),
        message="--num_train_identities must be smaller than --num_identities")


def summary_lines(counts: dict[str, int], output_dir: str) -> list[str]:
    """A small table of what was written."""
    ids = {"train": counts["train_identities"], "query": counts["test_identities"],
           "gallery": counts["test_identities"]}
    lines = [f"{'split':8} {'images':>8} {'ids':>6}"]
    lines += [f"{name:8} {counts[name]:8d} {ids[name]:6d}" for name in ids]
    lines.append(f"wrote {output_dir}")
    return lines


def generate() -> list[str]:
    counts = synthetic.generate(
        FLAGS.output_dir, num_identities=FLAGS.num_identities, num_cameras=FLAGS.num_cameras,
        images_per_identity_per_camera=FLAGS.images_per_identity_per_camera,
        height=FLAGS.height, width=FLAGS.width, num_train_identities=FLAGS.num_train_identities,
        seed=FLAGS.seed, image_format=FLAGS.image_format, overwrite=FLAGS.overwrite)
    return summary_lines(counts, FLAGS.output_dir)


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(generate)


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["output_dir"])
    app.run(main, flags_parser=parse_flags)
