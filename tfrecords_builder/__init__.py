"""Dataset parsers (one module per dataset) and the identity-sharded TFRecord writer.

`BUILDERS` maps a dataset name to its `parse(data_dir, **protocol_options) -> Split`.
"""

from tfrecords_builder import cuhk01, cuhk03, dukemtmc, market1501, mars, msmt17, synthetic

BUILDERS = {
    "market1501": market1501.parse,
    "dukemtmc": dukemtmc.parse,
    "cuhk03": cuhk03.parse,
    "msmt17": msmt17.parse,
    "mars": mars.parse,
    "cuhk01": cuhk01.parse,
    "synthetic": synthetic.parse,
}
