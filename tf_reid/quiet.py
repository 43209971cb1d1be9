"""Keeps TensorFlow's C++ start-up noise out of command-line output.

TensorFlow 2.21 logs through absl before absl's logging is initialised ("WARNING: All log
messages before absl::InitializeLog() ...", cudart_stub, cuInit on CPU hosts, cpu_feature_guard),
and those lines ignore TF_CPP_MIN_LOG_LEVEL (measured here). So a CLI routes file descriptor 2
through a filter that drops exactly the C++ log lines, while Python's own `sys.stderr` (errors,
progress bars, tracebacks) keeps writing straight to the real stderr.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Sequence

_VERBOSITY = re.compile(r"^(?:--verbosity|-v)(?:=(-?\d+))?$")
# absl/glog line prefix: severity letter, MMDD, time, thread id, file:line]  e.g.
# "I0000 00:00:1795497417.049877    2206 cudart_stub.cc:31] ..."
# libjpeg also prints to stderr on bad data ("Corrupt JPEG data: ...", "Premature end of JPEG
# file", "Improper call to JPEG library in state 201"); the command's own error line names the file.
_CPP_LOG = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]+\] |WARNING: All log messages "
                      rb"before absl::InitializeLog\(\)|To enable the following instructions|"
                      rb"Corrupt JPEG data: |Premature end of JPEG file$|Improper call to JPEG "
                      rb"library in state \d+$)")


def requested_verbosity(argv: Sequence[str]) -> int:
    """The value of absl's `--verbosity`/`-v` in `argv` (0 when absent)."""
    for i, arg in enumerate(argv):
        m = _VERBOSITY.match(arg)
        if m:
            value = m.group(1) if m.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else "0")
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def is_cpp_log_line(line: bytes) -> bool:
    """True for a TensorFlow/absl C++ log line (or its continuation line), or libjpeg's."""
    return bool(_CPP_LOG.match(line))


def _pump(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_cpp_log_line(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not is_cpp_log_line(pending):
            os.write(write_fd, pending)


def quiet_tensorflow(argv: Sequence[str]) -> None:
    """Filters TensorFlow's C++ log lines out of stderr unless `--verbosity` >= 1 asks for them.

    Call it first thing in a CLI's `__main__`, before TensorFlow is imported.
    """
    if requested_verbosity(argv) >= 1:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    real_stderr = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(real_stderr, "w", buffering=1, closefd=False)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    threading.Thread(target=_pump, args=(read_fd, real_stderr), daemon=True).start()
