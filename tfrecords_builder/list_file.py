"""Your own dataset, from a CSV list: `--dataset=list --data_dir=ROOT --list=FILE.csv`.

One row per image, four fields `path,pid,camid,split`:

    path,pid,camid,split
    cam1/alice_001.jpg,1,0,train
    cam2/bob_007.jpg,2,1,query

- path: the image, relative to ROOT (`--data_dir`); an absolute path, or one that leaves ROOT
  through `..`, is an error. Stored normalised (`a/./b.jpg` -> `a/b.jpg`); the same image listed
  twice is an error naming both lines.
- pid, camid: your own non-negative integers, written to the records as given (not made
  0-based or contiguous). Evaluation only compares them; the writer numbers the training pids
  0..C-1 as the classifier labels, as for every dataset (`manifest.json` "label_map").
- split: `train`, `query` or `gallery` (lower case). Evaluation matches each query against the
  gallery under the usual rule: gallery images of the same pid and camera are ignored.

The first row is a header when its pid field is literally `pid`; a header must then be exactly
`path,pid,camid,split` (columns are read by position, so a header in another order would
mislabel every row). Blank rows (also `,,,`) are skipped, whitespace around fields is stripped,
and a field may be quoted as in any CSV (a path containing a comma must be). A row with more or
fewer than four fields is an error: there is no room for comment columns. The file is read as
UTF-8 (a byte-order mark, as spreadsheets write, is allowed); `FILE` is read as given, relative to
the current directory, not to ROOT.

Bad rows are a DatasetError "FILE:LINE: problem" naming the first one (and how many there are in
all); line numbers are the file's own, header and blank lines included. Rows that are valid but
leave queries unscorable are warnings (`warnings.warn`, printed by `tools.build_tfrecords` as
`warning:` lines): query identities with no gallery image, and queries whose identity is in the
gallery only under their own camera.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass

from tfrecords_builder import atomic
from tfrecords_builder.records import (SPLITS, DatasetError, ParsedDataset, Record, require_dir,
                                       require_file)

COLUMNS = ("path", "pid", "camid", "split")
_INTEGER = re.compile(r"-?[0-9]+")  # not int(): it also takes "1_000", "+1" and other digits
_INT64_MAX = 2**63 - 1  # the TFRecord features are int64


@dataclass(frozen=True)
class _Row:
    """A non-blank CSV row: the file line it starts on, and its stripped fields."""

    line: int
    fields: list[str]


def _rows(list_file: str) -> list[_Row]:
    """The non-blank rows of the CSV, stripped, with the file line each one starts on."""
    rows = []
    try:
        with open(list_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1
            for fields in reader:
                fields = [field.strip() for field in fields]
                if any(fields):
                    rows.append(_Row(start, fields))
                start = reader.line_num + 1  # a quoted field may span lines
    except UnicodeDecodeError as e:
        raise DatasetError(f"{list_file}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise DatasetError(f"{list_file}:{reader.line_num}: {e}") from None
    return rows


def _integer(name: str, text: str) -> tuple[int | None, str | None]:
    """(value, None) for a non-negative int64 field, else (None, the problem)."""
    if not _INTEGER.fullmatch(text):
        return None, f"{name} {text!r} is not an integer"
    value = int(text)
    if value < 0:
        return None, f"{name} {value} is negative (leave junk images out of the list)"
    if value > _INT64_MAX:
        return None, f"{name} {value} does not fit in 64 bits"
    return value, None


def _check_path(path: str) -> tuple[str | None, str | None]:
    """(normalised path, None), or (None, the problem) for an empty or escaping path."""
    if not path:
        return None, "empty path"
    if os.path.isabs(path):
        return None, f"path {path} is absolute (paths are relative to --data_dir)"
    normal = os.path.normpath(path)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return None, f"path {path} leaves --data_dir"
    return normal, None


def _record(row: _Row, root: str, seen: dict[str, int]) -> tuple[Record | None, str | None]:
    """The row's Record, or its first problem. `seen` maps paths to the line listing them."""
    if any("\n" in field or "\r" in field for field in row.fields):
        return None, "a quoted field runs over several lines (a quote left open?)"
    if len(row.fields) != len(COLUMNS):
        return None, (f"expected {len(COLUMNS)} fields {','.join(COLUMNS)}, got "
                      f"{len(row.fields)} (quote a path that contains a comma)")
    path, pid_text, camid_text, split = row.fields
    path, problem = _check_path(path)
    if problem:
        return None, problem
    pid, problem = _integer("pid", pid_text)
    if problem:
        return None, problem
    camid, problem = _integer("camid", camid_text)
    if problem:
        return None, problem
    if split not in SPLITS:
        return None, f"unknown split {split!r} (expected {', '.join(SPLITS)})"
    if path in seen:
        return None, f"path {path} is also on line {seen[path]}"
    seen[path] = row.line
    if not os.path.isfile(os.path.join(root, path)):
        return None, f"missing image {os.path.join(root, path)}"
    return Record(path=path, pid=pid, camid=camid, split=split), None


def _check_header(list_file: str, rows: list[_Row]) -> list[_Row]:
    """`rows` without the header, if the first row is one (its pid field is literally 'pid')."""
    if not rows or len(rows[0].fields) < 2 or rows[0].fields[1] != "pid":
        return rows
    if tuple(rows[0].fields) != COLUMNS:
        raise DatasetError(f"{list_file}:{rows[0].line}: header {','.join(rows[0].fields)} is not "
                           f"{','.join(COLUMNS)} (columns are read in that order)")
    return rows[1:]


def evaluation_warnings(list_file: str, records: list[Record], lines: dict[str, int]) -> list[str]:
    """One line per kind of query that evaluation would skip, with its count and an example.

    Args:
      list_file: named in the lines.
      records: every record of the list.
      lines: path -> the list line of its row.

    Returns:
      At most two lines: query identities with no gallery image (their queries are skipped), and
      queries whose identity's gallery images all share the query's camera (same pid and camera
      is junk, so no match is left: `tf_reid.evaluation.metrics.evaluate_rank`).
    """
    gallery_cameras: dict[int, set[int]] = {}
    for r in records:
        if r.split == "gallery":
            gallery_cameras.setdefault(r.pid, set()).add(r.camid)
    queries = [r for r in records if r.split == "query"]
    absent = [r for r in queries if r.pid not in gallery_cameras]
    same_camera = [r for r in queries if gallery_cameras.get(r.pid) == {r.camid}]
    found = []
    if absent:
        pids = sorted({r.pid for r in absent})
        first = min(absent, key=lambda r: lines[r.path])
        found.append(f"{list_file}: query identities with no gallery image: {len(pids)}, "
                     f"their {len(absent)} queries are skipped in evaluation (e.g. pid "
                     f"{first.pid}, line {lines[first.path]})")
    if same_camera:
        first = min(same_camera, key=lambda r: lines[r.path])
        found.append(f"{list_file}: queries whose identity is in the gallery only under their "
                     f"own camera: {len(same_camera)}, skipped in evaluation (e.g. line "
                     f"{lines[first.path]}: {first.path}, pid {first.pid}, camid {first.camid})")
    return found


def parse(data_dir: str, list_file: str) -> ParsedDataset:
    """Parses the images listed in `list_file`, their paths relative to `data_dir`.

    Args:
      data_dir: ROOT, the folder the listed paths are relative to.
      list_file: the CSV (path,pid,camid,split; see the module docstring), relative to the
        current directory or absolute.

    Returns:
      A ParsedDataset "list" of the rows in file order, with source `data_dir` and protocol
      {"protocol": "single-query", "list": absolute list path, "list_sha256": its checksum}.
      Unscorable queries are reported with `warnings.warn` (`evaluation_warnings`).

    Raises:
      DatasetError: "FILE:LINE: problem" for the first bad row (with the number of bad rows), or
        naming the missing folder, list file or empty split.
    """
    require_dir(data_dir, "--data_dir, the folder the list's paths are relative to")
    require_file(list_file, "--list")
    records, lines, problems, seen = [], {}, [], {}
    for row in _check_header(list_file, _rows(list_file)):
        record, problem = _record(row, data_dir, seen)
        if problem:
            problems.append(f"{list_file}:{row.line}: {problem}")
        else:
            records.append(record)
            lines[record.path] = row.line
    if problems:
        more = f" (first of {len(problems)} bad rows)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    for split in SPLITS:
        if not any(r.split == split for r in records):
            raise DatasetError(f"{list_file}: no {split} rows (every split needs images)")
    for line in evaluation_warnings(list_file, records, lines):
        warnings.warn(line, stacklevel=2)
    return ParsedDataset(dataset="list", source=data_dir, records=tuple(records),
                         protocol={"protocol": "single-query", "list": os.path.abspath(list_file),
                                   "list_sha256": atomic.sha256_file(list_file)})
