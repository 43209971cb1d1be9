"""python -m tools.inspect_tfrecords data/cuhk03

Prints a TFRecord output's manifest counts, re-checks every shard's sha256 and record count,
identity contiguity and labels, decodes a sample of images, and exits non-zero on any mismatch.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

from absl import app, flags  # noqa: E402

from tfrecords_builder import verify  # noqa: E402
from tfrecords_builder.manifest import split_table  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_integer("samples", 8, "Images decoded per shard.", lower_bound=0)


def report_lines(output_dir: str, manifest: dict) -> list[str]:
    """The manifest's dataset, protocol and per-split counts, as printable lines."""
    protocol = ", ".join(f"{k}={v}" for k, v in sorted(manifest["protocol"].items()))
    lines = [f"{output_dir}: {manifest['dataset']} ({protocol})", *split_table(manifest)]
    lines.append(f"train classes: {manifest['num_classes']}; missing: {len(manifest['missing'])}; "
                 f"bad images skipped: {len(manifest['bad_images'])}")
    return lines


def main(argv: list[str]) -> int:
    problems: list[str] = []

    def check() -> list[str]:
        if len(argv) != 2:
            raise FlagError("give one TFRecords folder: python -m tools.inspect_tfrecords DIR")
        output_dir = argv[1]
        manifest, found = verify.verify(output_dir, FLAGS.samples)
        problems.extend(found)
        return report_lines(output_dir, manifest)

    status = run_reporting(check)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if status or problems:
        return 1
    print("ok: checksums, record counts, identity contiguity, labels and sample decodes agree")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
