"""DukeMTMC-reID (Zheng et al. 2017): `DukeMTMC-reID/{bounding_box_train,bounding_box_test,query}`.

Names like `0001_c2_f0046182.jpg`. Official counts: train 16,522 images / 702 ids;
query 2,228 / 702; gallery 17,661.
"""

from __future__ import annotations

from tfrecords_builder.naming import DUKE, MARKET_FOLDERS, parse_folders
from tfrecords_builder.records import ParsedDataset, find_root

ROOT_NAMES = ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmc")


def parse(data_dir: str) -> ParsedDataset:
    """Parses an extracted DukeMTMC-reID release (or its parent folder)."""
    root = find_root(data_dir, MARKET_FOLDERS["train"], ROOT_NAMES)
    return ParsedDataset(dataset="dukemtmc", source=root,
                 records=parse_folders(root, MARKET_FOLDERS, DUKE),
                 protocol={"protocol": "single-query"})
