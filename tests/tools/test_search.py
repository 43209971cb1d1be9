"""tools.build_index and tools.search end to end, and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from tests.conftest import REPO
from tests.tf_reid.index.data import brute_force, identities
from tf_reid.evaluation.features_file import SplitFeatures, load, save
from tf_reid.index.kinds import IndexInputError
from tools.build_index import build_index
from tools.cli import run_reporting
from tools.search import search_index


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Tiny galleries: one faiss thread (OpenMP's spinning threads crawl on a shared machine)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def split(embeddings: np.ndarray, pids: np.ndarray, prefix: str) -> SplitFeatures:
    n = len(pids)
    return SplitFeatures(embeddings, None, pids.astype(np.int64), np.arange(n) % 6,
                         np.array([f"{prefix}/{i:04d}.jpg" for i in range(n)]),
                         np.full(n, -1, np.int64), np.full(n, -1, np.int64))


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> str:
    # Scaled copies: the tools must L2-normalise before indexing.
    g, g_pids, q, q_pids = identities(50, 8, 32, noise=0.8, seed=0, num_queries=6)
    path = str(tmp_path_factory.mktemp("features") / "features.npz")
    save(path, {"query": split(3 * q, q_pids, "query"), "gallery": split(2 * g, g_pids, "gallery")})
    return path


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_build_then_search(features_file, tmp_path):
    built = run("tools.build_index", f"--features={features_file}", f"--output={tmp_path / 'ix'}",
                "--kind=ivf", "--params=nlist=8,nprobe=8", "--noprogress")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(f"wrote {tmp_path / 'ix'}: ivf index of 400 items, 32-d")
    searched = run("tools.search", f"--index={tmp_path / 'ix'}", f"--queries={features_file}",
                   "--k=5", f"--output={tmp_path / 'hits.json'}", "--noprogress")
    assert searched.returncode == 0, searched.stderr
    assert searched.stdout.startswith(f"wrote {tmp_path / 'hits.json'}: top-5 of 6 queries")

    query, gallery = (load(features_file, s) for s in ("query", "gallery"))
    normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    want_d, want_i = brute_force(normalise(query.global_), normalise(gallery.global_), 5)
    document = json.loads((tmp_path / "hits.json").read_text())
    assert (document["kind"], document["metric"], document["k"]) == ("ivf", "euclidean", 5)
    for q, result in enumerate(document["results"]):
        assert (result["query"], result["path"], result["pid"]) == (
            q, f"query/{q:04d}.jpg", int(query.pids[q]))
        assert [h["index"] for h in result["hits"]] == want_i[q].tolist()
        assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([h["distance"] for h in result["hits"]], want_d[q], atol=1e-5)
        assert [h["path"] for h in result["hits"]] == [f"gallery/{i:04d}.jpg" for i in want_i[q]]
        assert [h["pid"] for h in result["hits"]] == gallery.pids[want_i[q]].tolist()
        # Identities are well separated: the nearest crops are the query's own.
        assert result["hits"][0]["pid"] == result["pid"]


def test_search_prints_json_without_output(features_file, tmp_path, capsys):
    build_index(features_file, str(tmp_path / "ix"), "exact", {}, None, 1000, 100, False, False)
    np.save(tmp_path / "q.npy", np.eye(32, dtype=np.float32)[:2])
    assert run_reporting(lambda: search_index(str(tmp_path / "ix"), str(tmp_path / "q.npy"), 3,
                                              1, {}, None, False)) == 0
    document = json.loads(capsys.readouterr().out)
    assert [len(r["hits"]) for r in document["results"]] == [3, 3]
    assert document["results"][0]["path"] == "" and document["results"][0]["pid"] == -1


def test_fewer_than_k_hits_are_counted_and_said(features_file, tmp_path, capsys):
    # 32 lists of ~12 items, one probed: no query can get 40 hits.
    build_index(features_file, str(tmp_path / "ix"), "ivf", {"nlist": 32}, None, 1000, 100, False,
                False)
    for nprobe, output in ((1, None), (1, tmp_path / "hits.json"), (32, tmp_path / "all.json")):
        assert run_reporting(lambda: search_index(str(tmp_path / "ix"), features_file, 40, 8,
                                                  {"nprobe": nprobe}, output and str(output),
                                                  False)) == 0
        captured = capsys.readouterr()
        document = json.loads(output.read_text() if output else captured.out)
        found = [len(r["hits"]) for r in document["results"]]
        assert [r["found"] for r in document["results"]] == found
        short = sum(n < 40 for n in found)
        assert document["short_queries"] == short == (6 if nprobe == 1 else 0)
        warning = (f"warning: 6 of 6 queries have fewer than 40 hits (the ivf index found fewer; "
                   "raise nprobe / ef_search with --params)")
        said = captured.err if output is None else captured.out
        assert (warning in said) == bool(short)


def error_line(body, capsys) -> str:
    assert run_reporting(body, errors=(IndexInputError,)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip()


def test_error_lines(features_file, tmp_path, capsys):
    index = str(tmp_path / "ix")
    build_index(features_file, index, "exact", {}, None, 1000, 100, False, False)
    missing = str(tmp_path / "missing.npz")
    assert error_line(lambda: build_index(missing, str(tmp_path / "other"), "exact", {}, None,
                                          1000, 100, False, False), capsys) == \
        f"error: {missing}: no such file"
    assert not os.path.exists(tmp_path / "other")
    assert error_line(lambda: build_index(features_file, index, "exact", {}, None, 1000, 100,
                                          False, False), capsys) == \
        f"error: {index}: output already exists (pass --overwrite to replace it)"
    np.save(tmp_path / "q16.npy", np.ones((2, 16), np.float32))
    assert error_line(lambda: search_index(index, str(tmp_path / "q16.npy"), 5, 8, {}, None,
                                           False), capsys) == \
        f"error: {tmp_path / 'q16.npy'}: queries are 16-d but the index {index} is 32-d"
    assert error_line(lambda: search_index(index, features_file, 401, 8, {}, None, False),
                      capsys) == \
        f"error: --k=401: must be in 1..400, the items in the index {index}"
    assert error_line(lambda: search_index(index, features_file, 5, 8, {"nprobe": 4}, None,
                                           False), capsys) == \
        "error: exact has no query-time parameter ['nprobe']; it has none"


def test_failed_build_leaves_no_folder(tmp_path, capsys):
    g, g_pids, q, q_pids = identities(20, 10, 8, noise=0.8, seed=1, num_queries=2)
    g[150, 0] = np.inf
    save(str(tmp_path / "bad.npz"), {"query": split(q, q_pids, "query"),
                                     "gallery": split(g, g_pids, "gallery")})
    assert error_line(lambda: build_index(str(tmp_path / "bad.npz"), str(tmp_path / "ix"), "ivf",
                                          {"nlist": 4}, None, 100, 64, False, False), capsys) == \
        f"error: {tmp_path / 'bad.npz'}: gallery embeddings row 150 is not finite (NaN/inf)"
    assert sorted(os.listdir(tmp_path)) == ["bad.npz"]
