"""A validation split carved from the training identities, for tuning without the test set.

`carve_validation(parsed, num_identities, seed)` holds out `num_identities` training identities:
their images become a query/gallery pair split by the Market rule (per identity and camera, one
query image, the rest gallery: `synthetic.image_path`, Market-1501's query folder), and the
remaining training identities stay the training split. The original query and gallery are
dropped, so nothing chosen on the result has seen them.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from tfrecords_builder.records import ParsedDataset, Record, sort_key


def _cameras(records: list[Record]) -> dict[int, list[Record]]:
    """camid -> the identity's images in that camera, in `records.sort_key` order."""
    by_camera: dict[int, list[Record]] = collections.defaultdict(list)
    for record in sorted(records, key=sort_key):
        by_camera[record.camid].append(record)
    return dict(by_camera)


def has_cross_camera_matches(records: list[Record]) -> bool:
    """Whether every query the Market rule takes from this identity has a gallery image in
    another camera: true iff at least two of its cameras hold two or more images (a camera with
    one image gives only a query; a single-camera identity gives no cross-camera pair at all)."""
    return sum(len(images) >= 2 for images in _cameras(records).values()) >= 2


def carve_validation(parsed: ParsedDataset, num_identities: int, seed: int = 0) -> ParsedDataset:
    """The training identities of `parsed`, with `num_identities` of them held out as query/gallery.

    Args:
      parsed: a parsed image dataset (its query and gallery records are dropped).
      num_identities: identities to hold out; drawn uniformly (by `seed`) among the training
        identities whose queries can all find a cross-camera gallery match
        (`has_cross_camera_matches`).
      seed: same seed, same held-out identities.

    Returns:
      A ParsedDataset of the same dataset and source whose "train" records are the remaining
      training identities' and whose "query"/"gallery" records are the held-out identities'
      (per identity and camera: the first image in `records.sort_key` order is the query, the
      others gallery).
      Its protocol is `parsed.protocol` plus "validation": {"num_identities", "seed",
      "held_out_pids"}.

    Raises:
      ValueError: a video dataset (tracklets), num_identities < 1, more than there are eligible
        identities, or no training identity would remain.
    """
    train = parsed.of("train")
    if any(r.tracklet >= 0 for r in train):
        raise ValueError("carve_validation takes image datasets; these records have tracklets")
    by_pid: dict[int, list[Record]] = collections.defaultdict(list)
    for record in train:
        by_pid[record.pid].append(record)
    eligible = sorted(pid for pid, records in by_pid.items() if has_cross_camera_matches(records))
    if not 1 <= num_identities <= len(eligible):
        raise ValueError(f"num_identities must be in [1, {len(eligible)}] (training identities "
                         f"with cross-camera matches), got {num_identities}")
    if num_identities >= len(by_pid):
        raise ValueError(f"holding out {num_identities} of {len(by_pid)} training identities "
                         "leaves none to train on")
    rng = np.random.default_rng(seed)
    held_out = set(int(p) for p in rng.choice(eligible, size=num_identities, replace=False))

    evaluation = []
    for pid in sorted(held_out):
        for images in _cameras(by_pid[pid]).values():
            evaluation.append(dataclasses.replace(images[0], split="query"))
            evaluation.extend(dataclasses.replace(r, split="gallery") for r in images[1:])
    remaining = tuple(r for r in train if r.pid not in held_out)
    protocol = {**parsed.protocol, "validation": {
        "num_identities": num_identities, "seed": seed, "held_out_pids": sorted(held_out)}}
    return dataclasses.replace(parsed, records=remaining + tuple(evaluation), protocol=protocol)
