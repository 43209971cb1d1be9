"""Re-checks a written output against its manifest: checksums, record counts, identity
contiguity, label map, and a decoded sample of images."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfrecords_builder import atomic, features
from tfrecords_builder.images import op_error
from tfrecords_builder.manifest import MANIFEST, read_manifest


def read_shard(path: str) -> list[dict[str, Any]]:
    """Every example of one shard as a dict of Python values (image bytes included)."""
    dataset = tf.data.TFRecordDataset(path).map(features.parse)
    return [{k: v.numpy() for k, v in parsed.items()} for parsed in dataset]


def _check_decodes(example: dict[str, Any], where: str) -> list[str]:
    try:
        shape = tf.io.decode_image(example[features.IMAGE], channels=3,
                                   expand_animations=False).shape
    except tf.errors.OpError as e:
        return [f"{where}: image does not decode ({op_error(e)})"]
    if (shape[0], shape[1]) != (example[features.HEIGHT], example[features.WIDTH]):
        return [f"{where}: decoded size {shape[0]}x{shape[1]} differs from the stored "
                f"{example[features.HEIGHT]}x{example[features.WIDTH]}"]
    return []


def verify_split(output_dir: str, name: str, summary: dict[str, Any], label_map: dict[str, int],
                 samples: int) -> list[str]:
    """Problems found in one split's shards (empty when everything agrees)."""
    problems: list[str] = []
    seen_pids: set[int] = set()
    pids, camids = [], []
    for shard in summary["shards"]:
        path = os.path.join(output_dir, shard["file"])
        if not os.path.isfile(path):
            problems.append(f"{path}: missing shard")
            continue
        digest = atomic.sha256_file(path)
        if digest != shard["sha256"]:
            problems.append(f"{path}: sha256 {digest[:12]}... differs from the manifest's "
                            f"{shard['sha256'][:12]}...")
        try:
            examples = read_shard(path)
        except tf.errors.OpError as e:
            problems.append(f"{path}: unreadable ({op_error(e)})")
            continue
        if len(examples) != shard["records"]:
            problems.append(f"{path}: {len(examples)} records, manifest says {shard['records']}")
        shard_pids = [int(e[features.PID]) for e in examples]
        # Identity-contiguity: each pid forms one run, and no pid appears in two shards.
        runs = [p for i, p in enumerate(shard_pids) if i == 0 or p != shard_pids[i - 1]]
        if len(runs) != len(set(runs)) or seen_pids & set(runs):
            problems.append(f"{path}: identities are not contiguous")
        seen_pids |= set(runs)
        for e in examples:
            want = label_map.get(str(int(e[features.PID])), -1) if name == "train" else -1
            if int(e[features.LABEL]) != want:
                problems.append(f"{path}: pid {int(e[features.PID])} has label "
                                f"{int(e[features.LABEL])}, the label map says {want}")
                break
        step = max(1, len(examples) // max(1, samples))
        for e in examples[::step][:samples]:
            problems += _check_decodes(e, f"{path}:{e[features.PATH].decode()}")
        pids += shard_pids
        camids += [int(e[features.CAMID]) for e in examples]
    counts = {"images": len(pids), "identities": len(set(pids)), "cameras": len(set(camids))}
    for key, value in counts.items():
        if value != summary.get(key):
            problems.append(f"{output_dir}: split '{name}' has {value} {key}, manifest says "
                            f"{summary.get(key)}")
    return problems


def verify(output_dir: str, samples: int = 8) -> tuple[dict[str, Any], list[str]]:
    """(manifest, problems) for a written output; `samples` images per shard are decoded."""
    manifest = read_manifest(output_dir)
    problems = []
    if manifest.get("format_version") != features.FORMAT_VERSION:
        problems.append(f"{output_dir}/{MANIFEST}: format_version "
                        f"{manifest.get('format_version')}, this reader knows "
                        f"{features.FORMAT_VERSION}")
    labels = sorted(manifest["label_map"].values())
    if labels != list(range(len(labels))):
        problems.append(f"{output_dir}/{MANIFEST}: train labels are not 0..C-1")
    for name in manifest["splits"]:  # optional splits (multi_query, generated) too
        problems += verify_split(output_dir, name, manifest["splits"][name],
                                 manifest["label_map"], samples)
    return manifest, problems
