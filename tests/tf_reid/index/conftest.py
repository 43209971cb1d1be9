"""One faiss thread for the index tests: their galleries are tiny, and on a shared machine
OpenMP's spinning threads made them 10x slower (17.7 s against 1.4 s measured here)."""

from __future__ import annotations

import faiss
import pytest


@pytest.fixture(autouse=True, scope="package")
def one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
