"""python -m tools.convert_torch_weights --input ../shared/weights/mobilenetv2_imagenet_pytorch.pt --output weights/mobilenet_v2_imagenet.weights.h5

Converts the legacy PyTorch MobileNetV2 ImageNet state dict into Keras weights (`.weights.h5`) for
`tf_reid.models.torch_weights.mobilenet_v2_symmetric_padding`, which reproduces PyTorch's outputs
(symmetric padding, BatchNorm epsilon 1e-5, inputs normalised with ImageNet mean/std). No torch
needed. The weights fit any input size.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import os  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_reid.models import torch_weights  # noqa: E402
from tfrecords_builder import atomic  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("input", None,
                        "Legacy (pre-1.6) torch.save of the MobileNetV2 features state dict.")
    flags.DEFINE_string("output", None, "Keras weights file to write; must end in .weights.h5.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output file.")


def convert_weights(input_path: str, output_path: str, overwrite: bool) -> list[str]:
    """Writes the converted weights to `output_path` atomically; returns the lines to print.

    Raises:
      FlagError: `output_path` does not end in .weights.h5.
      OutputError: `output_path` exists and not `overwrite`, or it is the input.
      DatasetError: `input_path` is not a readable legacy MobileNetV2 state dict.
    """
    if not output_path.endswith(".weights.h5"):
        raise FlagError(f"{output_path}: output must end in .weights.h5")
    atomic.check_target(output_path, overwrite, [input_path])
    try:
        weights = torch_weights.keras_mobilenet_v2_weights(
            torch_weights.load_legacy_state_dict(input_path))
    except OSError as e:
        raise DatasetError(f"{input_path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise DatasetError(str(e)) from None
    model = torch_weights.mobilenet_v2_symmetric_padding()
    model.set_weights(weights)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with atomic.file(output_path, suffix=".weights.h5") as partial:  # Keras checks the suffix
        model.save_weights(partial)
    return [f"parameters: {model.count_params():,}", f"wrote {output_path}"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(lambda: convert_weights(FLAGS.input, FLAGS.output, FLAGS.overwrite))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["input", "output"])
    app.run(main, flags_parser=parse_flags)
