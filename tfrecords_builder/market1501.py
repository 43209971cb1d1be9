"""Market-1501 (Zheng et al. 2015): `Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query}`.

Names like `0002_c1s1_000451_03.jpg`. Junk boxes (pid -1) are left out; distractors (pid 0000)
stay in the gallery. Official counts: train 12,936 images / 751 ids; query 3,368 / 750;
gallery 15,913.
"""

from __future__ import annotations

from tfrecords_builder.naming import MARKET, MARKET_FOLDERS, parse_folders
from tfrecords_builder.records import ParsedDataset, find_root

ROOT_NAMES = ("Market-1501-v15.09.15", "Market-1501", "market1501")


def parse(data_dir: str) -> ParsedDataset:
    """Parses an extracted Market-1501 release (or its parent folder)."""
    root = find_root(data_dir, MARKET_FOLDERS["train"], ROOT_NAMES)
    return ParsedDataset(dataset="market1501", source=root,
                 records=parse_folders(root, MARKET_FOLDERS, MARKET),
                 protocol={"protocol": "single-query", "junk_pid": -1, "distractor_pid": 0})
