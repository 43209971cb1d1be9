"""The CLI stderr filter: which lines count as TensorFlow C++ log noise, and --verbosity."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tf_reid.quiet import is_cpp_log_line, requested_verbosity


def test_cpp_log_lines_are_recognised():
    noise = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1795497417.049877    2206 cudart_stub.cc:31] Could not find cuda drivers",
        b"E0000 00:00:1795497520.668336    3103 cuda_platform.cc:52] failed call to cuInit: ...",
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild ...",
        b"Improper call to JPEG library in state 201",  # libjpeg on a truncated file
        b"Corrupt JPEG data: premature end of data segment",
        b"Premature end of JPEG file",
    ]
    kept = [b"error: /data/x.jpg: image does not decode (jpeg: ...)",
            b"train        4145    427     2      5", b"I0 is not a log line", b""]
    assert all(is_cpp_log_line(line) for line in noise)
    assert not any(is_cpp_log_line(line) for line in kept)


def test_requested_verbosity():
    assert requested_verbosity(["prog"]) == 0
    assert requested_verbosity(["prog", "--verbosity=2"]) == 2
    assert requested_verbosity(["prog", "-v", "1"]) == 1
    assert requested_verbosity(["prog", "--verbosity", "-1"]) == -1


def test_verbosity_lets_the_cpp_lines_through(tmp_path):
    cmd = [sys.executable, "-m", "tools.inspect_tfrecords", str(tmp_path)]
    quiet = subprocess.run(cmd, cwd=REPO, capture_output=True)
    loud = subprocess.run(cmd + ["--verbosity=1"], cwd=REPO, capture_output=True)
    # No manifest there: both fail with the same one-line error.
    assert quiet.returncode == loud.returncode == 1
    assert quiet.stderr.decode().strip() == f"error: {tmp_path}/manifest.json: missing file " \
        "(not a tf-reid TFRecord output)"
    assert any(is_cpp_log_line(line) for line in loud.stderr.splitlines())
