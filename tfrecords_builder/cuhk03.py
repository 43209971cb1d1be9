"""CUHK03 (Li et al. 2014): labeled or detected boxes of 1,467 identities over 5 camera pairs.

Protocols (`protocol=`):
  new      CUHK03-NP (Zhong et al. 2017): 767 train / 700 test identities, from the official
           `cuhk03_new_protocol_config_{labeled,detected}.mat` (1-based `train_idx`, `query_idx`,
           `gallery_idx` into `filelist`; `labels` are the global pids).
  classic  the 20 random 100-identity test splits in `cuhk-03.mat`'s `testsets`
           (`split_index` 0..19); every other identity trains. Query and gallery are both the whole
           test set: evaluation drops same-pid same-camera gallery items as junk, so each query
           image is matched against the other camera of its pair.

Image sources (`source=`, "auto" picks the first present, in this order):
  images  `images_{box}/` of extracted crops named `{pair}_{pid:03d}_{view}_{img:02d}`, matched by
          stem (the official list says `.png`; JPEG bytes are fine, decoding is by content).
  mat     the original `cuhk-03.mat` (MATLAB v7.3 = HDF5, in the data dir or `cuhk03_release/`):
          cells `labeled`/`detected` of 5 pairs x M identities x 10 images, images stored
          transposed, slots 1-5 view 1 and 6-10 view 2; images are written losslessly as PNG.
  np      the CUHK03-NP Market-style folders `cuhk03-np/{box}/{bounding_box_train,...}`
          (new protocol only).

Pids are global (pair 1 first, as the official `labels`); camid = 2 * (pair - 1) + view - 1.
"""

from __future__ import annotations

import functools
import io
import os
import re

import numpy as np

from tfrecords_builder.naming import (MARKET_FOLDERS, PID_CAM, list_images, match_name,
                                      parse_folders, stem)
from tfrecords_builder.records import DatasetError, ParsedDataset, Record, read_file, require_file

STEM = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})$")
BOX_TYPES = ("labeled", "detected")
PROTOCOLS = ("new", "classic")
SOURCES = ("auto", "images", "mat", "np")
NUM_CLASSIC_SPLITS = 20


def camid(pair: int, view: int) -> int:
    """0-based global camera index of view 1/2 of camera pair 1..5."""
    return 2 * (pair - 1) + view - 1


def image_stem(pair: int, pid: int, view: int, img: int) -> str:
    """'1_001_1_01': the official name (without extension) of a crop."""
    return f"{pair}_{pid:03d}_{view}_{img:02d}"


def _find_mat(data_dir: str) -> str | None:
    for path in (os.path.join(data_dir, "cuhk-03.mat"),
                 os.path.join(data_dir, "cuhk03_release", "cuhk-03.mat")):
        if os.path.isfile(path):
            return path
    return None


def _find_np_root(data_dir: str, box_type: str) -> str | None:
    for root in (os.path.join(data_dir, "cuhk03-np", box_type), os.path.join(data_dir, box_type)):
        if os.path.isdir(os.path.join(root, MARKET_FOLDERS["train"])):
            return root
    return None


def resolve_source(data_dir: str, box_type: str, source: str) -> str:
    """The image source to use: `source`, or for "auto" the first one present."""
    present = {"images": os.path.isdir(os.path.join(data_dir, f"images_{box_type}")),
               "mat": _find_mat(data_dir) is not None,
               "np": _find_np_root(data_dir, box_type) is not None}
    if source == "auto":
        for name, found in present.items():
            if found:
                return name
        raise DatasetError(f"{data_dir}: no CUHK03 images found (expected images_{box_type}/, "
                           f"cuhk-03.mat or cuhk03-np/{box_type}/)")
    if not present[source]:
        where = {"images": os.path.join(data_dir, f"images_{box_type}"),
                 "mat": os.path.join(data_dir, "cuhk-03.mat"),
                 "np": os.path.join(data_dir, "cuhk03-np", box_type)}[source]
        raise DatasetError(f"{where}: missing ({source} source of CUHK03 {box_type} boxes)")
    return source


# --- cuhk-03.mat (MATLAB v7.3 / HDF5) -------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _open_mat(path: str):
    import h5py  # only the mat source needs it
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a MATLAB v7.3 (HDF5) file ({e})") from None


def _deref(mat, ref) -> np.ndarray:
    """A referenced MATLAB array in MATLAB's own axis order (HDF5 stores it transposed)."""
    return mat[ref][()].T


def _cell(mat, path: str, name: str) -> np.ndarray:
    if name not in mat:
        raise DatasetError(f"{path}: no '{name}' cell in this file")
    return mat[name][()].T


def mat_pair_cells(path: str, box_type: str) -> list[np.ndarray]:
    """The 5 camera-pair cells of `box_type`: object-reference arrays [M_pair, 10]."""
    mat = _open_mat(path)
    return [_deref(mat, ref) for ref in _cell(mat, path, box_type).ravel()]


def _is_image(mat, ref) -> bool:
    dataset = mat[ref]
    return dataset.ndim == 3 and dataset.size > 0


def mat_catalogue(path: str, box_type: str) -> dict[str, str]:
    """stem -> key inside the mat file, for every non-empty image slot of `box_type`."""
    mat = _open_mat(path)
    found = {}
    for pair, cell in enumerate(mat_pair_cells(path, box_type), start=1):
        for pid, row in enumerate(cell, start=1):
            for img, ref in enumerate(row, start=1):
                if _is_image(mat, ref):
                    view = 1 if img <= 5 else 2
                    name = image_stem(pair, pid, view, img)
                    found[name] = f"{box_type}/{name}"
    return found


def read_mat_image(source: str, key: str) -> bytes:
    """PNG bytes of the image at `key` ('labeled/1_001_1_01') in the mat file `source`."""
    from PIL import Image

    box_type, name = key.split("/")
    pair, pid, _, img = match_name(STEM, name)
    mat = _open_mat(source)
    ref = mat_pair_cells(source, box_type)[pair - 1][pid - 1, img - 1]
    pixels = np.ascontiguousarray(_deref(mat, ref))  # [H, W, 3] after undoing the transpose
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def classic_test_set(path: str, split_index: int) -> set[tuple[int, int]]:
    """The (pair, identity) pairs, 1-based, of classic test split `split_index` (0..19)."""
    if not 0 <= split_index < NUM_CLASSIC_SPLITS:
        raise DatasetError(f"{path}: split_index {split_index} outside 0..{NUM_CLASSIC_SPLITS - 1}")
    mat = _open_mat(path)
    splits = _cell(mat, path, "testsets").ravel()
    rows = _deref(mat, splits[split_index]).reshape(-1, 2)
    return {(int(pair), int(pid)) for pair, pid in rows}


# --- extracted image folder -----------------------------------------------------------------

def dir_catalogue(data_dir: str, box_type: str) -> dict[str, str]:
    """stem -> path relative to `data_dir` of every image in `images_{box_type}/`.

    Raises:
      DatasetError: naming the first image whose name is not `{pair}_{pid:03d}_{view}_{img:02d}`.
    """
    folder = f"images_{box_type}"
    found = {}
    for name in list_images(os.path.join(data_dir, folder)):
        match_name(STEM, os.path.join(data_dir, folder, name))
        found[stem(name)] = os.path.join(folder, name)
    return found


# --- protocols ------------------------------------------------------------------------------

def _record(location: str, split: str, pid: int) -> Record:
    pair, _, view, _ = match_name(STEM, location)
    return Record(path=location, pid=pid, camid=camid(pair, view), split=split)


def new_protocol_records(split_file: str, catalogue: dict[str, str], where: str,
                         allow_missing: bool) -> tuple[tuple[Record, ...], tuple[str, ...]]:
    """Records of the official new-protocol split file, looked up by stem in `catalogue`.

    Returns:
      (records, missing): missing are the listed names with no image, only if `allow_missing`.
    """
    from scipy.io import loadmat

    try:
        config = loadmat(split_file)
        names = [str(np.asarray(n).ravel()[0]) for n in config["filelist"].ravel()]
        labels = config["labels"].ravel().astype(int)
        parts = {s: config[f"{s}_idx"].ravel().astype(int) - 1 for s in ("train", "query", "gallery")}
    except (KeyError, ValueError, OSError) as e:
        raise DatasetError(f"{split_file}: not a CUHK03 new-protocol split file ({e})") from None
    records, missing = [], []
    for split, indices in parts.items():
        for i in indices:
            name = stem(names[i])
            location = catalogue.get(name)
            if location is None:
                if not allow_missing:
                    raise DatasetError(
                        f"{os.path.join(where, names[i])}: missing image listed in "
                        f"{os.path.basename(split_file)} (pass --allow_missing to skip absent "
                        "images; the manifest then lists them)")
                missing.append(names[i])
                continue
            records.append(_record(location, split, int(labels[i])))
    return tuple(records), tuple(missing)


def classic_records(mat_path: str, box_type: str, catalogue: dict[str, str],
                    split_index: int) -> tuple[Record, ...]:
    """Records of classic split `split_index`: test identities in query and gallery."""
    sizes = [cell.shape[0] for cell in mat_pair_cells(mat_path, box_type)]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    test = classic_test_set(mat_path, split_index)
    records = []
    for name, location in sorted(catalogue.items()):
        pair, pid, _, _ = match_name(STEM, name)
        global_pid = int(offsets[pair - 1]) + pid
        splits = ("query", "gallery") if (pair, pid) in test else ("train",)
        records.extend(_record(location, s, global_pid) for s in splits)
    return tuple(records)


def parse(data_dir: str, box_type: str = "labeled", protocol: str = "new",
          split_index: int = 0, allow_missing: bool = False, source: str = "auto") -> ParsedDataset:
    """Parses CUHK03 under one protocol from one image source (see the module docstring).

    Args:
      data_dir: folder holding `images_{box}/`, `cuhk-03.mat` (or `cuhk03_release/`), the
        new-protocol split files, or `cuhk03-np/`.
      box_type: "labeled" or "detected".
      protocol: "new" (CUHK03-NP, 767/700) or "classic" (20 x 100 test identities).
      split_index: classic split, 0..19.
      allow_missing: skip split-file entries with no image instead of failing.
      source: "auto", "images", "mat" or "np".
    """
    for value, allowed, what in ((box_type, BOX_TYPES, "box_type"), (protocol, PROTOCOLS, "protocol"),
                                 (source, SOURCES, "source")):
        if value not in allowed:
            raise DatasetError(f"{data_dir}: unknown CUHK03 {what} '{value}' (one of {allowed})")
    source = resolve_source(data_dir, box_type, source)
    options = {"protocol": protocol, "box_type": box_type, "source": source,
               "allow_missing": allow_missing}
    if source == "np":
        if protocol != "new":
            raise DatasetError(f"{data_dir}: the cuhk03-np folders only hold the new protocol")
        root = _find_np_root(data_dir, box_type)
        return ParsedDataset("cuhk03", root, parse_folders(root, MARKET_FOLDERS, PID_CAM), options)

    mat_path = _find_mat(data_dir)
    if source == "mat":
        root, reader, catalogue = mat_path, read_mat_image, mat_catalogue(mat_path, box_type)
        where = f"{mat_path}:{box_type}"
    else:
        root, reader, catalogue = data_dir, read_file, dir_catalogue(data_dir, box_type)
        where = os.path.join(data_dir, f"images_{box_type}")

    if protocol == "new":
        split_file = require_file(
            os.path.join(data_dir, f"cuhk03_new_protocol_config_{box_type}.mat"),
            "CUHK03 new-protocol split file")
        records, missing = new_protocol_records(split_file, catalogue, where, allow_missing)
        options["split_file"] = os.path.basename(split_file)
    else:
        if mat_path is None:
            raise DatasetError(f"{os.path.join(data_dir, 'cuhk-03.mat')}: missing file "
                               "(the classic protocol's testsets live there)")
        records, missing = classic_records(mat_path, box_type, catalogue, split_index), ()
        options["split_index"] = split_index
    return ParsedDataset("cuhk03", root, records, options, missing, reader)
