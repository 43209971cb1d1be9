"""iLIDS-VID (Wang et al. 2014, "Person Re-Identification by Video Ranking"): 300 identities, one
sequence per camera (600 sequences of 23..192 frames).

Layout of the release (`iLIDS-VID.tar`; `--data_dir` is the folder it extracts into, or its
parent as `ilids-vid/` or `iLIDS-VID/`):

  i-LIDS-VID/sequences/cam1/personNNN/cam1_personNNN_FFFFF.png   camera 1 (camid 0)
  i-LIDS-VID/sequences/cam2/personNNN/cam2_personNNN_FFFFF.png   camera 2 (camid 1)
  train-test people splits/train_test_splits_ilidsvid.mat         the official splits

NNN is the person number (001..319, with gaps: 300 are used), FFFFF the frame number in the
source video. The release's single-shot `i-LIDS-VID/images/` folder is not read.

Protocol, the official splits as torchreid's `ilidsvid` reads them: the .mat file's `ls_set` is a
10 x 300 array whose row i is split i, a permutation of 1-based indices into the sorted person
folders (not person numbers: these have gaps). The first half of a row (150) is the test set and
the second half trains, "following Wang et al. ECCV'14" in torchreid's words. Train = both
sequences of the train persons; query = the camera-1 sequence and gallery = the camera-2
sequence of each test person. Records are frames, as MARS's: `tracklet` = 2 * (0-based index of
the person folder) + camid, unique in the dataset, and `frame` = the 0-based position in the
sequence (frame files sorted by name), so that `tf_reid.evaluate --tracklet_pooling=mean`
scores one pooled feature per sequence. The manifest records the split file, the index and the
test pids.
"""

from __future__ import annotations

import os
import re

import numpy as np

from tfrecords_builder.mars import read_table
from tfrecords_builder.naming import list_images, match_name
from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root, require_dir, \
    require_file
from tfrecords_builder.viper import check_split_index

ROOT_NAMES = ("ilids-vid", "iLIDS-VID")
SEQUENCES = "i-LIDS-VID/sequences"
CAMERAS = ("cam1", "cam2")  # camid 0, 1
SPLIT_FILE = "train-test people splits/train_test_splits_ilidsvid.mat"
SPLIT_KEY = "ls_set"
NUM_SPLITS = 10
TEST_SPLITS = ("query", "gallery")  # indexed by camid: camera 1 -> query, camera 2 -> gallery

PERSON = re.compile(r"^person(\d{3})$")
# cam1_person001_00317.png: camera 1, person 001, frame 317 of the video.
FRAME = re.compile(r"^cam([12])_person(\d{3})_(\d{5})$")


def person_folders(camera: str) -> list[str]:
    """Sorted person folder names of a camera folder (files beside them are ignored).

    Raises:
      DatasetError: naming the camera folder when missing, or a folder not named personNNN.
    """
    names = sorted(n for n in os.listdir(camera) if os.path.isdir(os.path.join(camera, n)))
    for name in names:
        if PERSON.match(name) is None:
            raise DatasetError(f"{os.path.join(camera, name)}: folder name does not parse "
                               f"(expected {PERSON.pattern})")
    return names


def sequence_frames(folder: str, cam: int, person: int) -> list[str]:
    """Sorted frame file names of one sequence, checked against its camera and person.

    Raises:
      DatasetError: naming the frame whose name does not parse or names another camera or
        person, or the folder when it holds no frame.
    """
    names = list_images(folder)
    if not names:
        raise DatasetError(f"{folder}: no frames in this sequence")
    for name in names:
        got_cam, got_person, _ = match_name(FRAME, os.path.join(folder, name))
        if (got_cam, got_person) != (cam, person):
            raise DatasetError(f"{os.path.join(folder, name)}: frame of camera {got_cam}, person "
                               f"{got_person:03d} in the folder of camera {cam}, person "
                               f"{person:03d}")
    return names


def read_splits(path: str, num_persons: int, camera: str) -> np.ndarray:
    """The official `ls_set` [10, num_persons] of 1-based person-folder indices, checked.

    Raises:
      DatasetError: naming `path` when it is missing, unreadable, of the wrong shape, or a row
        is not a permutation of 1..num_persons.
    """
    require_file(path, "iLIDS-VID train/test splits")
    splits = read_table(path, SPLIT_KEY)
    if splits.shape != (NUM_SPLITS, num_persons):
        raise DatasetError(f"{path}: {SPLIT_KEY} has shape {splits.shape}, expected "
                           f"({NUM_SPLITS}, {num_persons}) = {NUM_SPLITS} splits x the "
                           f"{num_persons} person folders of {camera}")
    expected = np.arange(1, num_persons + 1)
    for row, indices in enumerate(splits):
        if not np.array_equal(np.sort(indices), expected):
            raise DatasetError(f"{path}: row {row + 1} of {SPLIT_KEY} is not a permutation of "
                               f"1..{num_persons}")
    return splits


def parse(data_dir: str, split_index: int = 0) -> ParsedDataset:
    """Parses an extracted iLIDS-VID release into per-frame records under one official split.

    Args:
      data_dir: the folder holding `i-LIDS-VID/` and `train-test people splits/`, or its parent.
      split_index: the row of `ls_set`, 0..9.

    Returns:
      A ParsedDataset with paths `i-LIDS-VID/sequences/camC/personNNN/<frame>`; pid = NNN;
      tracklet and frame as in the module docstring.

    Raises:
      DatasetError: naming the missing folder or split file, a misnamed folder or frame, a person
        with a sequence in one camera only, a bad split file, or --split_index outside 0..9.
    """
    check_split_index(split_index, NUM_SPLITS, "iLIDS-VID")
    root = find_root(data_dir, "i-LIDS-VID", ROOT_NAMES)
    cameras = [require_dir(os.path.join(root, SEQUENCES, cam), f"iLIDS-VID {cam} sequences")
               for cam in CAMERAS]
    persons = [person_folders(camera) for camera in cameras]
    for camid, other in ((0, 1), (1, 0)):
        alone = sorted(set(persons[camid]) - set(persons[other]))
        if alone:
            raise DatasetError(f"{os.path.join(cameras[camid], alone[0])}: no sequence of this "
                               f"person in {cameras[other]} ({len(alone)} such persons; the "
                               "protocol needs both cameras)")
    names = persons[0]
    splits = read_splits(os.path.join(root, SPLIT_FILE), len(names), cameras[0])
    row = splits[split_index] - 1
    half = len(names) // 2
    test = set(row[:half].tolist())  # 0-based indices into `names`

    records = []
    for index, name in enumerate(names):
        pid = match_name(PERSON, name)[0]
        for camid, cam in enumerate(CAMERAS):
            split = TEST_SPLITS[camid] if index in test else "train"
            folder = f"{SEQUENCES}/{cam}/{name}"
            frames = sequence_frames(os.path.join(root, folder), camid + 1, pid)
            records.extend(Record(path=f"{folder}/{frame_name}", pid=pid, camid=camid,
                                  split=split, tracklet=2 * index + camid, frame=frame)
                           for frame, frame_name in enumerate(frames))
    test_pids = sorted(match_name(PERSON, names[i])[0] for i in test)
    return ParsedDataset(dataset="ilidsvid", source=root, records=tuple(records), protocol={
        "protocol": "ilidsvid-official-splits", "split_file": SPLIT_FILE,
        "split_index": split_index, "num_splits": NUM_SPLITS, "test": "first half of the row",
        "query_camera": 0, "gallery_camera": 1, "test_pids": test_pids})
