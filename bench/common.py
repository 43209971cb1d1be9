"""What the benchmarks share: where ../shared's real CUHK03 crops are, and the settings file
of a `bench.cuhk03_subset` run."""

from __future__ import annotations

import os

# ../shared/data/cuhk03 beside the repository (CUHK03 camera pair 1, labeled boxes).
SHARED_CUHK03 = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                              "data", "cuhk03"))
# In every bench.cuhk03_subset workdir: the settings it was trained with (bench.feature_choice
# reads its data_dir).
SETTINGS_FILE = "bench_settings.json"
