"""What a dataset parser returns: frozen records of one protocol split, and its errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

SPLITS = ("train", "query", "gallery")
# The split of extra query images a multi-query protocol pools per query (Market-1501's hand-drawn
# gt_bbox/ boxes, `tf_reid.evaluate --multi_query`).
MULTI_QUERY = "multi_query"
# The split of GAN-generated images of nobody (`tools.generate_gan_samples`; Zheng et al. 2017,
# arXiv 1701.07717), whose records have pid and camid NO_IDENTITY (and label -1, as outside
# "train"). An output may hold this split alone.
GENERATED = "generated"
NO_IDENTITY = -1  # no real identity has it (the junk pid of Market-1501 and MARS)
# Splits a dataset may have beside SPLITS; the writer writes each one that has records.
OPTIONAL_SPLITS = (MULTI_QUERY, GENERATED)


class DatasetError(Exception):
    """Bad input data: the message is one line that names the file and the problem.

    Command-line misuse (a flag that does not apply, a bad combination) is not a dataset
    problem: the commands report it as `tools.cli.FlagError`.
    """


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    Attributes:
      path: location of the image relative to `ParsedDataset.source` (a file path, or a key inside
        a container such as `cuhk-03.mat`).
      pid: the dataset's own identity number (0 = distractor in Market-style galleries).
      camid: 0-based camera index, unique within the dataset.
      split: "train", "query", "gallery" or (optional) "multi_query" or "generated".
      tracklet: video tracklet id (-1 for image datasets).
      frame: frame index inside the tracklet (-1 for image datasets).
    """

    path: str
    pid: int
    camid: int
    split: str
    tracklet: int = -1
    frame: int = -1


def sort_key(record: Record) -> tuple:
    """Identity first, so that sorting makes identities contiguous; then tracklet/frame order."""
    return (record.pid, record.tracklet, record.frame, record.camid, record.path)


def read_file(source: str, path: str) -> bytes:
    """Reads `path` relative to the directory `source`, as bytes."""
    with open(os.path.join(source, path), "rb") as f:
        return f.read()


@dataclass(frozen=True)
class ParsedDataset:
    """A dataset under one protocol: its records, where their bytes come from, and options.

    Attributes:
      dataset: registry name, e.g. "market1501".
      source: the directory (or container file) the record paths are relative to.
      records: every record of every split.
      protocol: the protocol options that produced this split (goes into the manifest).
      missing: entries the protocol lists whose image is absent (only with allow_missing).
      reader: `reader(source, path) -> bytes`; a module-level function so it pickles.
    """

    dataset: str
    source: str
    records: tuple[Record, ...]
    protocol: Mapping[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    reader: Callable[[str, str], bytes] = read_file

    def of(self, split: str) -> tuple[Record, ...]:
        """The records of one split, in parse order."""
        return tuple(r for r in self.records if r.split == split)


def require_dir(path: str, what: str) -> str:
    """Returns `path` if it is a directory, else raises a DatasetError naming it."""
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: missing folder ({what})")
    return path


def require_file(path: str, what: str) -> str:
    """Returns `path` if it is a file, else raises a DatasetError naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing file ({what})")
    return path


def find_root(data_dir: str, marker: str, candidates: tuple[str, ...]) -> str:
    """Finds the dataset root: `data_dir` itself or one of its usual sub-folder names.

    Users point `--data_dir` either at the extracted release folder or at its parent, so
    accept both: the first of `data_dir`, `data_dir/<candidate>` containing `marker`.
    """
    require_dir(data_dir, "dataset root")
    for root in (data_dir, *(os.path.join(data_dir, c) for c in candidates)):
        if os.path.exists(os.path.join(root, marker)):
            return root
    names = ", ".join(candidates)
    raise DatasetError(f"{os.path.join(data_dir, marker)}: missing "
                       f"(looked in {data_dir} and its sub-folders {names})")
