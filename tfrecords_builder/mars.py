"""MARS (Zheng et al. 2016, "MARS: A Video Benchmark for Large-Scale Person Re-identification").

Layout of the release (`--data_dir` may be this folder or its parent):

  bbox_train/<pid4>/<name>, bbox_test/<pid4>/<name>
  info/train_name.txt, info/test_name.txt       one frame file name per line
  info/tracks_train_info.mat (`track_train_info`), info/tracks_test_info.mat (`track_test_info`):
      one row per tracklet, [start, end, pid, camid], 1-based inclusive line numbers of the
      name list, camid 1..6
  info/query_IDX.mat (`query_IDX`): 1-based rows of the test table used as queries

Frame names read `0001C1T0001F001.jpg`: pid 0001, camera 1, tracklet 0001, frame 001; junk
boxes carry the pid `00-1` (-1), distractors `0000`. Every tracklet's pid and camera are checked
against its frame names; frame files are not opened or stat'ed here (1.19M of them), the writer
reports a missing one when it reads the bytes.

Protocol, as in the official MATLAB evaluation kit (`test_mars.m`): the queries are the
`query_IDX` tracklets, and the gallery is every test tracklet, the queries included. A query's
own tracklet has its pid and camera, so the usual same-pid-same-camera junk rule removes it at
evaluation; the other queries stay as cross-camera matches. Junk tracklets (pid -1), which the kit
marks junk for every query, are left out of every split; distractors (pid 0) stay in the gallery.
torchreid instead removes all query tracklets from the gallery (`gallery="exclude_query"`), which
leaves 140 of the 1,980 queries without any cross-camera match in the real release, so its
numbers are not comparable with the kit's.

Official counts: train 8,298 tracklets / 625 ids / 509,914 frames; test table 12,180
tracklets (636 pids incl. -1 and 0) / 681,089 frames; 1,980 queries; the gallery has 11,310
tracklets with "all_test" and 9,330 with "exclude_query".
"""

from __future__ import annotations

import os
import re

import numpy as np
import scipy.io

from tfrecords_builder.records import DatasetError, ParsedDataset, Record, find_root, require_dir, \
    require_file

ROOT_NAMES = ("MARS", "mars", "MARS-v160809")
GALLERIES = ("all_test", "exclude_query")
JUNK_PID = -1

# 0001C1T0001F001.jpg; junk frames are written with the pid 00-1.
NAME = re.compile(r"^(\d{4}|00-1)C(\d)T\d+F\d+\.jpg$")


def read_names(path: str) -> list[str]:
    """Frame names of a MARS name list, one per line; line i+1 is index i.

    Raises:
      DatasetError: naming `path` and the line, when a name does not parse.
    """
    with open(require_file(path, "MARS frame name list")) as f:
        names = f.read().splitlines()
    while names and not names[-1].strip():
        names.pop()
    if None in map(NAME.match, names):
        line = next(i for i, n in enumerate(names) if NAME.match(n) is None) + 1
        raise DatasetError(f"{path}: line {line} does not parse ({names[line - 1]!r}, "
                           "expected e.g. 0001C1T0001F001.jpg)")
    return names


def read_table(path: str, key: str) -> np.ndarray:
    """A MATLAB variable of a MARS info file as an int64 array.

    Raises:
      DatasetError: naming `path`, when it is missing, unreadable or lacks `key`.
    """
    try:
        mat = scipy.io.loadmat(require_file(path, "MARS info table"))
    except (scipy.io.matlab.MatReadError, NotImplementedError, ValueError, OSError,
            TypeError) as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from None
    if key not in mat:
        raise DatasetError(f"{path}: no variable '{key}'")
    return np.asarray(mat[key]).astype(np.int64)


def check_tracklets(table: np.ndarray, names: list[str], table_path: str,
                    names_path: str) -> None:
    """Checks that every row's frames exist in `names` and carry the row's pid and camera.

    Args:
      table: [T, 4] rows [start, end, pid, camid], 1-based inclusive frame lines.
      names: the frame names the table indexes.

    Raises:
      DatasetError: naming the table or the name list and the offending row and line.
    """
    if table.ndim != 2 or table.shape[1] != 4:
        raise DatasetError(f"{table_path}: table has shape {table.shape}, "
                           "expected [tracklets, 4] = [start, end, pid, camid]")
    starts, ends = table[:, 0], table[:, 1]
    bad = np.flatnonzero((starts < 1) | (ends < starts) | (ends > len(names)))
    if bad.size:
        row = int(bad[0])
        raise DatasetError(f"{table_path}: row {row + 1} has frames {starts[row]}..{ends[row]}, "
                           f"outside lines 1..{len(names)} of {names_path}")
    # Vectorised: per-frame pid and camera from the names against the row they belong to.
    name_pids = np.array([-1 if n[:4] == "00-1" else int(n[:4]) for n in names], np.int64)
    name_cams = np.array([ord(n[5]) - ord("0") for n in names], np.int64)
    lengths = ends - starts + 1
    rows = np.repeat(np.arange(len(table)), lengths)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    lines = starts[rows] - 1 + offsets  # 0-based name index of every frame of every row
    wrong = np.flatnonzero((name_pids[lines] != table[rows, 2]) |
                           (name_cams[lines] != table[rows, 3]))
    if wrong.size:
        row, line = int(rows[wrong[0]]), int(lines[wrong[0]])
        raise DatasetError(f"{names_path}: line {line + 1} ({names[line]}) does not match row "
                           f"{row + 1} of {table_path} (pid {table[row, 2]}, "
                           f"camera {table[row, 3]})")


def tracklet_records(table: np.ndarray, rows: np.ndarray, names: list[str], folder: str,
                     split: str) -> list[Record]:
    """One record per frame of the table rows `rows`; tracklet = the 0-based table row."""
    records = []
    for row in rows.tolist():
        start, end, pid, cam = table[row].tolist()
        camid = cam - 1
        records.extend(Record(path=f"{folder}/{name[:4]}/{name}", pid=pid, camid=camid,
                              split=split, tracklet=row, frame=frame)
                       for frame, name in enumerate(names[start - 1:end]))
    return records


def parse(data_dir: str, gallery: str = "all_test") -> ParsedDataset:
    """Parses an extracted MARS release (or its parent folder) into per-frame records.

    Args:
      data_dir: the MARS folder (with bbox_train/, bbox_test/, info/) or its parent.
      gallery: "all_test" (official kit: every non-junk test tracklet, queries included) or
        "exclude_query" (torchreid: the query tracklets removed from the gallery).

    Returns:
      A ParsedDataset with one Record per frame; `tracklet` is the 0-based row of the train or test
      table, `frame` the 0-based position inside the tracklet, camid 0..5.

    Raises:
      DatasetError: one line naming the missing or inconsistent file.
      ValueError: for an unknown `gallery`.
    """
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be one of {GALLERIES}, got {gallery!r}")
    root = find_root(data_dir, "bbox_train", ROOT_NAMES)
    for folder in ("bbox_train", "bbox_test"):
        require_dir(os.path.join(root, folder), "MARS frames")
    info = require_dir(os.path.join(root, "info"), "MARS protocol files")
    tables = {}
    for part in ("train", "test"):
        table_path = os.path.join(info, f"tracks_{part}_info.mat")
        names_path = os.path.join(info, f"{part}_name.txt")
        table = read_table(table_path, f"track_{part}_info")
        names = read_names(names_path)
        check_tracklets(table, names, table_path, names_path)
        tables[part] = (table, names)

    query_path = os.path.join(info, "query_IDX.mat")
    test, test_names = tables["test"]
    query_rows = read_table(query_path, "query_IDX").ravel() - 1
    outside = query_rows[(query_rows < 0) | (query_rows >= len(test))]
    if outside.size:
        raise DatasetError(f"{query_path}: query row {outside[0] + 1} outside the "
                           f"{len(test)} rows of tracks_test_info.mat")
    keep = test[:, 2] != JUNK_PID
    query_rows = query_rows[keep[query_rows]]
    gallery_rows = np.flatnonzero(keep)
    if gallery == "exclude_query":
        gallery_rows = np.setdiff1d(gallery_rows, query_rows)

    train, train_names = tables["train"]
    records = (tracklet_records(train, np.flatnonzero(train[:, 2] != JUNK_PID), train_names,
                                "bbox_train", "train")
               + tracklet_records(test, query_rows, test_names, "bbox_test", "query")
               + tracklet_records(test, gallery_rows, test_names, "bbox_test", "gallery"))
    return ParsedDataset(dataset="mars", source=root, records=tuple(records),
                 protocol={"protocol": "mars-official-kit", "gallery": gallery,
                           "junk_pid": JUNK_PID, "distractor_pid": 0})
