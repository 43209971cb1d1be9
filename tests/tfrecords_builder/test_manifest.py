"""manifest.json: round trip, one-line errors, the split table, and what reading it imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tfrecords_builder import BUILDERS
from tfrecords_builder.manifest import MANIFEST, read_manifest, split_table, write_manifest
from tfrecords_builder.records import DatasetError


def summary(images, ids, cams, shards):
    return {"images": images, "identities": ids, "cameras": cams,
            "shards": [{"file": f"s{i}", "records": 1, "sha256": ""} for i in range(shards)]}


def test_round_trip_and_errors_name_the_file(tmp_path):
    manifest = {"dataset": "hand", "splits": {"train": summary(12, 3, 2, 2)}, "label_map": {"7": 0}}
    write_manifest(str(tmp_path), manifest)
    assert read_manifest(str(tmp_path)) == manifest
    text = (tmp_path / MANIFEST).read_text()
    assert text.endswith("}\n") and text.index('"dataset"') < text.index('"label_map"')
    (tmp_path / MANIFEST).write_text('{"dataset": \n')
    with pytest.raises(DatasetError, match=f"^{tmp_path / MANIFEST}: not valid JSON .* line 2"):
        read_manifest(str(tmp_path))
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'none' / MANIFEST}: missing file"):
        read_manifest(str(tmp_path / "none"))


def test_split_table():
    manifest = {"splits": {"train": summary(12936, 751, 6, 13), "query": summary(3368, 750, 6, 4),
                           "gallery": summary(15913, 751, 6, 16)}}
    assert split_table(manifest) == [
        "split      images    ids  cams shards",
        "train       12936    751     6     13",
        "query        3368    750     6      4",
        "gallery     15913    751     6     16",
    ]


def test_reading_a_manifest_imports_no_parser_and_no_image_library():
    """The manifest alone needs neither TensorFlow nor scipy / PIL / h5py; the training input
    pipeline (which imports TensorFlow, and with it those libraries) imports no dataset parser."""
    parsers = sorted(BUILDERS.values())
    code = f"""
import json, sys
import tfrecords_builder.manifest
light = [m for m in ("tensorflow", "scipy", "PIL", "h5py") if m in sys.modules]
import tf_reid.data.pk, tf_reid.data.tfrecords
print(json.dumps([light, [m for m in {parsers!r} if m in sys.modules]]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [[], []]
