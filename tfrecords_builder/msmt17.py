"""MSMT17 (Wei et al. 2018, "Person Transfer GAN to Bridge Domain Gap for Person Re-ID").

Layout (`--data_dir` may be the release folder or its parent; with both releases in the parent,
V1 is taken, so point at MSMT17_V2 to use it):

  MSMT17_V1/{train,test}/<pid4>/<name>             + list_{train,val,query,gallery}.txt
  MSMT17_V2/{mask_train_v2,mask_test_v2}/<pid4>/<name> + the same four lists

The version is recognised by which image folders exist. List lines read `relpath pid`, e.g.
`0000/0000_000_01_0303morning_0015_0.jpg 0`, relative to the train folder (train and val lists)
or the test folder (query and gallery lists); train and test pids are numbered separately, both
from 0. The camera is the third `_`-field of the file name (1..15), stored 0-based.

The standard protocol trains on list_train only (`combine_trainval=False`); with
`combine_trainval=True` list_val (a subset of the train identities) joins the train split.
Official counts: train 30,248 images / 1,041 ids (32,621 with val); query 11,659; gallery
82,161; 3,060 test ids.
"""

from __future__ import annotations

import os
import re

from tfrecords_builder.naming import match_name
from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root, require_dir, \
    require_file

ROOT_NAMES = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
# version -> (train folder, test folder)
VERSIONS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
NUM_CAMERAS = 15

# 0000_000_01_0303morning_0015_0: pid, index, camera (1-based), date+time, frame, box.
NAME = re.compile(r"^\d+_\d+_(\d+)_.+$")


def detect_version(root: str) -> str:
    """'v1' or 'v2', from which of the two releases' image folders `root` holds."""
    for version, (train, test) in VERSIONS.items():
        if os.path.isdir(os.path.join(root, train)):
            require_dir(os.path.join(root, test), f"MSMT17 {version} test images")
            return version
    raise DatasetError(f"{os.path.join(root, 'train')}: missing folder (MSMT17_V1 has train/ "
                       "and test/, MSMT17_V2 mask_train_v2/ and mask_test_v2/)")


def read_list(root: str, list_name: str, folder: str, split: str) -> list[Record]:
    """Records of one MSMT17 list file, each listed image checked to exist.

    Args:
      root: the release folder; record paths are relative to it.
      list_name: e.g. "list_train.txt", inside `root`.
      folder: the image folder the list's paths are relative to, e.g. "train".
      split: the split the records go to.

    Raises:
      DatasetError: naming the list and line, or the listed file, that is wrong.
    """
    list_path = require_file(os.path.join(root, list_name), "MSMT17 image list")
    records = []
    with open(list_path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit():
                raise DatasetError(f"{list_path}: line {number} does not parse "
                                   f"({line.strip()!r}, expected 'relpath pid')")
            path = os.path.join(folder, fields[0])
            (cam,) = match_name(NAME, os.path.join(root, path))
            if not 1 <= cam <= NUM_CAMERAS:
                raise DatasetError(f"{os.path.join(root, path)}: camera {cam} outside "
                                   f"1..{NUM_CAMERAS} (listed in {list_path} line {number})")
            if not os.path.isfile(os.path.join(root, path)):
                raise DatasetError(f"{os.path.join(root, path)}: missing file "
                                   f"(listed in {list_path} line {number})")
            records.append(Record(path=path, pid=int(fields[1]), camid=cam - 1, split=split))
    return records


def parse(data_dir: str, combine_trainval: bool = False) -> ParsedDataset:
    """Parses an extracted MSMT17_V1 or MSMT17_V2 release (or its parent folder).

    Args:
      data_dir: the release folder (with the list files) or its parent.
      combine_trainval: add list_val.txt to the train split (not the standard protocol).

    Returns:
      A ParsedDataset whose record paths are relative to the release folder.

    Raises:
      DatasetError: one line naming the missing or malformed file.
    """
    root = find_root(data_dir, "list_train.txt", ROOT_NAMES)
    version = detect_version(root)
    train, test = VERSIONS[version]
    lists = [("list_train.txt", train, "train")]
    if combine_trainval:
        lists.append(("list_val.txt", train, "train"))
    lists += [("list_query.txt", test, "query"), ("list_gallery.txt", test, "gallery")]
    records = [r for list_name, folder, split in lists
               for r in read_list(root, list_name, folder, split)]
    return ParsedDataset(dataset="msmt17", source=root, records=tuple(records),
                 protocol={"version": version, "combine_trainval": combine_trainval})
