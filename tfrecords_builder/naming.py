"""File-name conventions shared by the dataset parsers, and the Market-style folder layout."""

from __future__ import annotations

import os
import re
from typing import Mapping

from tfrecords_builder.records import DatasetError, Record, require_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# Market-1501: 0002_c1s1_000451_03.jpg (pid -1 = junk, 0000 = distractor).
MARKET = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+$")
# DukeMTMC-reID: 0001_c2_f0046182.jpg.
DUKE = re.compile(r"^(\d+)_c(\d+)_f\d+$")
# Generic Market-style names (CUHK03-NP, the synthetic set): <pid>_c<cam>_<anything>.
PID_CAM = re.compile(r"^(-?\d+)_c(\d+)(?:_.*)?$")

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def stem(path: str) -> str:
    """File name without folder and image extension(s): 'a/1_001_1_01.png' -> '1_001_1_01'.

    Repeated extensions go too: the Market-1501 release has files like
    `query/1488_c1s6_023021_00.jpg.jpg`.
    """
    name = os.path.basename(path)
    while True:
        base, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            return name
        name = base


def match_name(pattern: re.Pattern, path: str) -> tuple[int, ...]:
    """The integer groups of `pattern` matched against the stem of `path`.

    Raises:
      DatasetError: naming `path`, when the name does not follow the convention.
    """
    m = pattern.match(stem(path))
    if m is None:
        raise DatasetError(f"{path}: file name does not parse (expected {pattern.pattern})")
    return tuple(int(g) for g in m.groups())


def list_images(folder: str) -> list[str]:
    """Sorted image file names directly inside `folder` (other files, e.g. Thumbs.db, ignored)."""
    require_dir(folder, "image folder")
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


def parse_folders(root: str, folders: Mapping[str, str], pattern: re.Pattern,
                  junk_pid: int | None = -1) -> tuple[Record, ...]:
    """Records of a Market-style layout: one folder per split, pid and camera in the name.

    Args:
      root: dataset root; `folders` are relative to it.
      folders: split name -> sub-folder, e.g. MARKET_FOLDERS.
      pattern: regex whose first two groups are pid and 1-based camera.
      junk_pid: pid whose images are left out (Market's -1); None keeps all.

    Returns:
      Records with paths relative to `root` and 0-based camids.
    """
    records = []
    for split, sub in folders.items():
        for name in list_images(os.path.join(root, sub)):
            path = os.path.join(sub, name)
            pid, cam = match_name(pattern, os.path.join(root, path))[:2]
            if pid == junk_pid:
                continue
            records.append(Record(path=path, pid=pid, camid=cam - 1, split=split))
    return tuple(records)
