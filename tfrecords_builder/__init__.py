"""Dataset parsers (one module per dataset) and the identity-sharded TFRecord writer.

`BUILDERS` maps a dataset name to the module whose
`parse(data_dir, **protocol_options) -> ParsedDataset` reads it; `parser(name)` imports that
module. Parsers are imported only when a dataset is converted: they pull in scipy, PIL or h5py,
which reading a manifest (`tfrecords_builder.manifest`, imported by training, evaluation and
export) must not.
"""

from __future__ import annotations

import importlib
from typing import Callable

from tfrecords_builder.records import ParsedDataset

BUILDERS = {
    "market1501": "tfrecords_builder.market1501",
    "dukemtmc": "tfrecords_builder.dukemtmc",
    "cuhk03": "tfrecords_builder.cuhk03",
    "msmt17": "tfrecords_builder.msmt17",
    "mars": "tfrecords_builder.mars",
    "cuhk01": "tfrecords_builder.cuhk01",
    "viper": "tfrecords_builder.viper",
    "prid2011": "tfrecords_builder.prid2011",
    "ilidsvid": "tfrecords_builder.ilidsvid",
    "synthetic": "tfrecords_builder.synthetic",
    "list": "tfrecords_builder.list_file",  # your own dataset: a CSV of path,pid,camid,split
}


def parser(dataset: str) -> Callable[..., ParsedDataset]:
    """The `parse` function of `dataset` (a key of BUILDERS), importing its module now."""
    return importlib.import_module(BUILDERS[dataset]).parse
