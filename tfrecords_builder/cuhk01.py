"""CUHK01 (Li et al. 2012, "Human Reidentification with Transferred Metric Learning").

Layout: `CUHK01/campus/IIIIJJJ.png` (`--data_dir` may be CUHK01 or its parent): IIII is the
identity 0001..0971, JJJ 001-002 are camera A (camid 0) and 003-004 camera B (camid 1);
971 identities x 4 images = 3,884 images.

Protocol (the usual random identity split, seeded here so that it is reproducible): the sorted
pids are permuted by `numpy.random.RandomState(split_seed).permutation`; the first
`num_train_identities` (485) train on both cameras, the other 486 are tested with camera A as
query and camera B as gallery (as in torchreid's `cuhk01`, single-shot A -> B).
"""

from __future__ import annotations

import os
import re

import numpy as np

from tfrecords_builder.naming import list_images, match_name
from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root

ROOT_NAMES = ("CUHK01", "cuhk01")
IMAGES_PER_CAMERA = 2
IMAGES_PER_IDENTITY = 4
TEST_SPLITS = ("query", "gallery")  # indexed by camid: camera A -> query, camera B -> gallery

# 0001001.png: identity 0001, image 001.
NAME = re.compile(r"^(\d{4})(\d{3})$")


def parse(data_dir: str, split_seed: int = 0, num_train_identities: int = 485) -> ParsedDataset:
    """Parses an extracted CUHK01 release (or its parent folder) under one seeded split.

    Args:
      data_dir: the folder holding `campus/`, or its parent.
      split_seed: seed of the identity permutation.
      num_train_identities: identities in the train split; the rest are the test set.

    Returns:
      A ParsedDataset with paths `campus/<name>`; test camera A -> query, camera B -> gallery.

    Raises:
      DatasetError: naming the folder or file that is missing, misnamed or too small.
    """
    root = find_root(data_dir, "campus", ROOT_NAMES)
    campus = os.path.join(root, "campus")
    images = []
    for name in list_images(campus):
        pid, number = match_name(NAME, os.path.join(campus, name))
        if not 1 <= number <= IMAGES_PER_IDENTITY:
            raise DatasetError(f"{os.path.join(campus, name)}: image number {number} outside "
                               f"1..{IMAGES_PER_IDENTITY}")
        images.append((os.path.join("campus", name), pid, (number - 1) // IMAGES_PER_CAMERA))
    pids = sorted({pid for _, pid, _ in images})
    if not 0 < num_train_identities < len(pids):
        raise DatasetError(f"{campus}: {len(pids)} identities, cannot train on "
                           f"{num_train_identities} and test on the rest")
    order = np.random.RandomState(split_seed).permutation(pids)
    train_pids = set(order[:num_train_identities].tolist())
    records = tuple(
        Record(path=path, pid=pid, camid=camid,
               split="train" if pid in train_pids else TEST_SPLITS[camid])
        for path, pid, camid in images)
    return ParsedDataset(dataset="cuhk01", source=root, records=records,
                 protocol={"split_seed": split_seed, "num_train_identities": num_train_identities,
                           "query_camera": 0, "gallery_camera": 1})
