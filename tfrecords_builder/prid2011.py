"""PRID 2011, single-shot (Hirzer et al. 2011, "Person Re-Identification by Descriptive and
Discriminative Classification").

Layout of the release (`--data_dir` may be prid_2011/ or its parent):

  prid_2011/single_shot/cam_a/person_NNNN.png   385 persons, camera A (camid 0)
  prid_2011/single_shot/cam_b/person_NNNN.png   749 persons, camera B (camid 1)

Persons 0001..0200 are the same people in both cameras; above 200 the numbers of the two folders
are unrelated people seen by one camera only. (The release's multi_shot/ folder is not read.)

Protocol (torchreid's `prid`): 10 random splits of the 200 shared persons in half, drawn as
VIPeR's (`viper.random_split`: split i is the (i+1)-th permutation by
`numpy.random.RandomState(split_seed)`; first half train, second half test). Train = both cameras
of the 100 train persons; query = camera A of the 100 test persons; gallery = camera B of the 100
test persons plus every camera-B-only person (0201..0749: 549 distractors). The camera-A-only
persons (0201..0385) are not used. Distractors get pid 0, the Market-1501 convention
(`Record.pid`): they match no query, and their own numbers are not identities of this protocol
(camera A's person 0201 is someone else); the scores are those of torchreid, which keeps the
numbers, since a distractor is never a query's match either way. The manifest records the seed,
the index, the test pids, and the numbers of distractors and of unused camera-A persons.
"""

from __future__ import annotations

import os
import re

from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root, require_dir
from tfrecords_builder.viper import camera_images, check_split_index, random_split

ROOT_NAMES = ("prid_2011", "prid2011", "PRID2011")
SINGLE_SHOT = "single_shot"
CAMERAS = ("cam_a", "cam_b")  # camid 0, 1
NUM_SPLITS = 10
NUM_SHARED = 200
DISTRACTOR_PID = 0

# person_0001.png
NAME = re.compile(r"^person_(\d{4})$")


def parse(data_dir: str, split_seed: int = 0, split_index: int = 0,
          num_shared: int = NUM_SHARED) -> ParsedDataset:
    """Parses the single-shot part of an extracted PRID 2011 release under one random split.

    Args:
      data_dir: the prid_2011 folder (holding single_shot/) or its parent.
      split_seed: seed of the 10 random splits.
      split_index: which of them, 0..9.
      num_shared: persons 1..num_shared are the people seen by both cameras (200 in the
        release; smaller only for test layouts, not a command-line option).

    Returns:
      A ParsedDataset with paths `single_shot/cam_a/<name>`, `single_shot/cam_b/<name>`; pid =
      person number, 0 for the camera-B-only distractors.

    Raises:
      DatasetError: naming the missing folder, a misnamed file, a shared person missing from a
        camera, or --split_index outside 0..9.
    """
    check_split_index(split_index, NUM_SPLITS, "PRID 2011")
    root = find_root(data_dir, SINGLE_SHOT, ROOT_NAMES)
    folders = [require_dir(os.path.join(root, SINGLE_SHOT, cam),
                           f"PRID 2011 camera {cam[-1].upper()}") for cam in CAMERAS]
    images = [camera_images(folder, NAME) for folder in folders]
    for camid, folder in enumerate(folders):
        absent = [n for n in range(1, num_shared + 1) if n not in images[camid]]
        if absent:
            raise DatasetError(
                f"{os.path.join(folder, f'person_{absent[0]:04d}.png')}: missing ({len(absent)} "
                f"of persons 1..{num_shared} absent; the protocol needs them in both cameras)")
    train, test = random_split(range(1, num_shared + 1), split_seed, split_index)
    train_pids, test_pids = set(train), set(test)

    def path(camid: int, number: int) -> str:
        return f"{SINGLE_SHOT}/{CAMERAS[camid]}/{images[camid][number]}"

    records = []
    for number in sorted(images[0]):
        if number in train_pids:
            records.append(Record(path(0, number), number, 0, "train"))
        elif number in test_pids:
            records.append(Record(path(0, number), number, 0, "query"))
    distractors = 0
    for number in sorted(images[1]):
        if number in train_pids:
            records.append(Record(path(1, number), number, 1, "train"))
        elif number in test_pids:
            records.append(Record(path(1, number), number, 1, "gallery"))
        else:
            records.append(Record(path(1, number), DISTRACTOR_PID, 1, "gallery"))
            distractors += 1
    return ParsedDataset(dataset="prid2011", source=root, records=tuple(records), protocol={
        "protocol": "prid2011-single-shot-random-splits", "split_seed": split_seed,
        "split_index": split_index, "num_splits": NUM_SPLITS, "num_shared": num_shared,
        "query_camera": 0, "gallery_camera": 1, "test_pids": test,
        "distractor_pid": DISTRACTOR_PID, "num_distractors": distractors,
        "num_unused_camera_a": sum(n > num_shared for n in images[0])})
