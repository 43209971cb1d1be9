"""`manifest.json`, the description of a TFRecord output: written by the writer, read by the rest.

Keys: "format_version", "dataset", "source", "protocol", "splits" (train, query, gallery and any
optional split such as multi_query; GAN samples: "generated" alone; per split: "images",
"identities", "cameras", ["tracklets"], "shards": [{"file", "records", "sha256"}]),
"num_classes", "label_map" ({str(pid): label}), "missing", "bad_images", "options".

Standard library only, so reading a manifest (training, evaluation, export) imports neither
TensorFlow nor a dataset parser.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfrecords_builder.records import OPTIONAL_SPLITS, SPLITS, DatasetError

MANIFEST = "manifest.json"


def write_manifest(output_dir: str, manifest: dict[str, Any]) -> None:
    """Writes `output_dir/manifest.json` (sorted keys, one-space indent, final newline)."""
    with open(os.path.join(output_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def read_manifest(output_dir: str) -> dict[str, Any]:
    """Loads `output_dir/manifest.json`, raising DatasetError naming it when absent or broken."""
    path = os.path.join(output_dir, MANIFEST)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file (not a tf-reid TFRecord output)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def split_table(manifest: dict[str, Any]) -> list[str]:
    """Per-split images / identities / cameras / shards of a manifest, as printable lines."""
    names = tuple(name for name in SPLITS + OPTIONAL_SPLITS if name in manifest["splits"])
    width = max(8, *(len(name) for name in names))
    lines = [f"{'split':{width}} {'images':>8} {'ids':>6} {'cams':>5} {'shards':>6}"]
    for name in names:
        s = manifest["splits"][name]
        lines.append(f"{name:{width}} {s['images']:8d} {s['identities']:6d} {s['cameras']:5d} "
                     f"{len(s['shards']):6d}")
    return lines
