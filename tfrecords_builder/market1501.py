"""Market-1501 (Zheng et al. 2015): `Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query}`.

Names like `0002_c1s1_000451_03.jpg`. Junk boxes (pid -1) are left out; distractors (pid 0000)
stay in the gallery. Official counts: train 12,936 images / 751 ids; query 3,368 / 750;
gallery 15,913.

When the release has `gt_bbox/` (the 25,259 hand-drawn boxes, named like the others; the query
images are among them), its boxes of each query's identity and camera become the split
"multi_query", which `tf_reid.evaluate --multi_query` pools per query (the official kit's
multiple-query protocol). Only those boxes are kept: the others (training identities, cameras
without a query) can never be pooled, and extracting them would double the evaluation's work.
Without `gt_bbox/` there is no such split.
"""

from __future__ import annotations

import os

from tfrecords_builder.naming import MARKET, MARKET_FOLDERS, parse_folders
from tfrecords_builder.records import MULTI_QUERY, ParsedDataset, Record, find_root

ROOT_NAMES = ("Market-1501-v15.09.15", "Market-1501", "market1501")
GT_BBOX = "gt_bbox"


def multi_query_records(root: str, query: tuple[Record, ...]) -> tuple[Record, ...]:
    """The `gt_bbox/` boxes of each query's (pid, camid), as records of split "multi_query".

    Junk names (pid -1) are left out as in the other folders.
    """
    wanted = {(r.pid, r.camid) for r in query}
    boxes = parse_folders(root, {MULTI_QUERY: GT_BBOX}, MARKET)
    return tuple(r for r in boxes if (r.pid, r.camid) in wanted)


def parse(data_dir: str) -> ParsedDataset:
    """Parses an extracted Market-1501 release (or its parent folder)."""
    root = find_root(data_dir, MARKET_FOLDERS["train"], ROOT_NAMES)
    records = parse_folders(root, MARKET_FOLDERS, MARKET)
    protocol = {"protocol": "single-query", "junk_pid": -1, "distractor_pid": 0}
    if os.path.isdir(os.path.join(root, GT_BBOX)):
        records += multi_query_records(root, tuple(r for r in records if r.split == "query"))
        protocol["multi_query"] = GT_BBOX
    return ParsedDataset(dataset="market1501", source=root, records=records, protocol=protocol)
