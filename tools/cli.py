"""What every tf-reid command line shares: bad input is one `error:` line and exit status 1."""

from __future__ import annotations

import sys
from typing import Callable, Sequence, Type

from absl import flags, logging

from tfrecords_builder.records import DatasetError


def warnings_only_unless_verbose() -> None:
    """absl logs from WARNING up unless `--verbosity` was given (call after flag parsing)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run_reporting(body: Callable[[], Sequence[str]],
                  errors: tuple[Type[Exception], ...] = (DatasetError,)) -> int:
    """Runs `body`, prints the lines it returns, and returns the exit status.

    An exception of `errors` (bad input: DatasetError by default) becomes one
    `error: <message>` line on stderr and status 1. absl logs from WARNING up unless
    `--verbosity` is given: TensorFlow's INFO lines (a line per checkpoint or SavedModel
    write) would bury the command's own output.
    """
    warnings_only_unless_verbose()
    try:
        lines = body()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
