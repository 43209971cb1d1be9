"""VIPeR (Gray et al. 2007, "Evaluating Appearance Models for Recognition, Reacquisition, and
Tracking"): 632 identities, one image per camera.

Layout of the release (`VIPeR.v1.0.zip`; `--data_dir` may be VIPeR/ or its parent):

  VIPeR/cam_a/NNN_AA.bmp   camera A (camid 0)
  VIPeR/cam_b/NNN_AA.bmp   camera B (camid 1)

NNN is the person number (000..873, with gaps: 632 are used), the same number for the same person
in both folders; AA is the viewpoint angle (0, 45, 90, 135, 180), which differs between the two
images of a person (`001_45.bmp` in cam_a, `001_90.bmp` in cam_b). Images are paired by NNN;
torchreid pairs the sorted file lists by position, which is the same pairing whenever both folders
hold the same numbers, which this parser checks. pid = NNN + 1, so that no person gets pid 0,
which Market-style galleries reserve for distractors.

Protocol (torchreid's `viper`, the usual VIPeR evaluation): 10 random splits of the identities in
half, 316 train / 316 test (half of the identities found, rounded down, train). Split i is the
(i+1)-th of the successive permutations `numpy.random.RandomState(split_seed).permutation` draws
of the sorted pids, so that `split_seed` and `split_index` fix it; its first half trains on both
cameras, and the other half is tested with camera A as query and camera B as gallery (one
gallery image per identity: single-shot). torchreid also lists each split with the cameras
swapped (B query, A gallery; its odd split ids, averaged with the even ones); that variant is not
implemented here. The manifest records the seed, the index and the test pids.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from tfrecords_builder.naming import list_images, match_name
from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root, require_dir

ROOT_NAMES = ("VIPeR", "viper", "VIPeR.v1.0")
CAMERAS = ("cam_a", "cam_b")  # camid 0, 1
TEST_SPLITS = ("query", "gallery")  # indexed by camid: camera A -> query, camera B -> gallery
NUM_SPLITS = 10

# 000_45.bmp: person 000 seen at 45 degrees.
NAME = re.compile(r"^(\d{3})_(\d{1,3})$")


def camera_images(folder: str, pattern: re.Pattern) -> dict[int, str]:
    """Person number -> file name of a camera folder holding one image per person.

    Args:
      folder: the camera folder.
      pattern: regex whose first group is the person number.

    Raises:
      DatasetError: naming the folder when it is missing, or the file whose name does not parse
        or whose person already has an image in the folder.
    """
    found: dict[int, str] = {}
    for name in list_images(folder):
        number = match_name(pattern, os.path.join(folder, name))[0]
        if number in found:
            raise DatasetError(f"{os.path.join(folder, name)}: a second image of person {number} "
                               f"(besides {found[number]}; one image per person and camera)")
        found[number] = name
    return found


def check_split_index(split_index: int, num_splits: int, what: str) -> None:
    """Raises a DatasetError naming --split_index unless 0 <= split_index < num_splits."""
    if not 0 <= split_index < num_splits:
        raise DatasetError(f"--split_index={split_index}: outside 0..{num_splits - 1} "
                           f"({what} has {num_splits} splits)")


def random_split(pids: Sequence[int], split_seed: int,
                 split_index: int) -> tuple[list[int], list[int]]:
    """(train pids, test pids), sorted, of the seeded random split `split_index`.

    `numpy.random.RandomState(split_seed)` permutes the sorted pids `split_index + 1` times; the
    last permutation's first `len(pids) // 2` pids train, the others test. Split i does not
    depend on how many splits a protocol has, and the legacy RandomState stream is frozen by
    NumPy's compatibility policy, so a seed gives the same splits on every NumPy version.
    """
    if split_index < 0:
        raise ValueError(f"split_index must be >= 0, got {split_index}")
    rng = np.random.RandomState(split_seed)
    for _ in range(split_index + 1):
        order = rng.permutation(sorted(pids)).tolist()
    half = len(pids) // 2
    return sorted(order[:half]), sorted(order[half:])


def parse(data_dir: str, split_seed: int = 0, split_index: int = 0) -> ParsedDataset:
    """Parses an extracted VIPeR release (or its parent folder) under one random split.

    Args:
      data_dir: the VIPeR folder (holding cam_a/ and cam_b/) or its parent.
      split_seed: seed of the 10 random splits.
      split_index: which of them, 0..9.

    Returns:
      A ParsedDataset with paths `cam_a/<name>`, `cam_b/<name>`; pid = person number + 1; train
      = both cameras of half of the identities, query = camera A and gallery = camera B of the
      other half.

    Raises:
      DatasetError: naming the missing folder, a misnamed file, a person with an image in one
        camera only, or --split_index outside 0..9.
    """
    check_split_index(split_index, NUM_SPLITS, "VIPeR")
    root = find_root(data_dir, CAMERAS[0], ROOT_NAMES)
    folders = [require_dir(os.path.join(root, cam), f"VIPeR camera {cam[-1].upper()}")
               for cam in CAMERAS]
    images = [camera_images(folder, NAME) for folder in folders]
    for camid, other in ((0, 1), (1, 0)):
        alone = sorted(set(images[camid]) - set(images[other]))
        if alone:
            name = images[camid][alone[0]]
            raise DatasetError(f"{os.path.join(folders[camid], name)}: person {alone[0]:03d} has "
                               f"no image in {folders[other]} ({len(alone)} such persons; "
                               "every VIPeR person is seen by both cameras)")
    numbers = sorted(images[0])
    if len(numbers) < 2:
        raise DatasetError(f"{root}: only {len(numbers)} person(s), too few to split into train "
                           "and test")
    train, test = random_split([n + 1 for n in numbers], split_seed, split_index)
    train_pids = set(train)
    records = tuple(
        Record(path=f"{CAMERAS[camid]}/{images[camid][number]}", pid=number + 1, camid=camid,
               split="train" if number + 1 in train_pids else TEST_SPLITS[camid])
        for camid in (0, 1) for number in numbers)
    return ParsedDataset(dataset="viper", source=root, records=records, protocol={
        "protocol": "viper-random-splits", "split_seed": split_seed, "split_index": split_index,
        "num_splits": NUM_SPLITS, "num_train_identities": len(train),
        "query_camera": 0, "gallery_camera": 1, "test_pids": test})
