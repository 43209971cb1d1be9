"""Build, search, save and load: exact against brute force, approximate kinds by recall."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from tests.tf_reid.index.data import brute_force, identities, random_unit, unit
from tf_reid.index import exact, gallery
from tf_reid.index.kinds import KINDS, IndexInputError
from tfrecords_builder import atomic

# Parameters generous enough for near-exact search of a 2,000-item gallery.
GENEROUS = {"exact": {}, "exact_bf16": {}, "hnsw": {"m": 16, "ef_construction": 40, "ef_search": 100},
            "ivf": {"nlist": 32, "nprobe": 8}, "ivfpq": {"nlist": 32, "nprobe": 8, "pq_m": 16,
                                                          "pq_bits": 4}}


@pytest.fixture(scope="module")
def people():
    # 200 identities x 10 crops, 64-d; same-identity crops at distance ~0.9, others ~1.4.
    return identities(200, 10, 64, noise=0.8, seed=0, num_queries=100)


def metadata(n: int) -> gallery.Metadata:
    return gallery.Metadata(np.array([f"g/{i:04d}.jpg" for i in range(n)]),
                            np.arange(n, dtype=np.int64) // 10, np.arange(n, dtype=np.int64) % 6)


def test_exact_kind_equals_brute_force():
    g, q = random_unit(500, 32, seed=0), random_unit(40, 32, seed=1)
    index = gallery.build(g, kind="exact", progress=False, chunk=128)
    distances, indices = gallery.search(index, q, 10, batch=16)
    want_d, want_i = brute_force(q, g, 10)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)


@pytest.mark.parametrize("scale, params", [
    (False, {}),                                    # 3,001 = 75 groups of 40 + 1 item
    (True, {"group": 7, "groups": 40, "block": 100}),  # 31 GEMM blocks, the last one partial
])
def test_exact_bf16_equals_brute_force(scale, params):
    # Random 32-d vectors: the 10 nearest are far enough apart for bfloat16 scores to keep them
    # in the re-ranked groups. Scaled items score up to ~2, where bfloat16 steps are 2^-7: the
    # margin (40 groups for k = 10) covers that.
    g, q = random_unit(3001, 32, seed=0), random_unit(40, 32, seed=1)
    if scale:  # norms 0.5-2: the ||g||^2 bias decides the ranking too
        g = g * np.random.default_rng(2).uniform(0.5, 2, (len(g), 1)).astype(np.float32)
    index = gallery.build(g, kind="exact_bf16", params=params, progress=False)
    distances, indices = gallery.search(index, q, 10, batch=16)
    want_d, want_i = brute_force(q, g, 10)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)


def test_exact_bf16_k_above_groups_and_pca():
    # k = every item: more than `groups` groups are re-ranked, the padding never comes back.
    g, q = random_unit(50, 16, seed=0), random_unit(3, 16, seed=1)
    index = gallery.build(g, kind="exact_bf16", params={"group": 8, "groups": 2}, progress=False)
    distances, indices = gallery.search(index, q, 50)
    want_d, want_i = brute_force(q, g, 50)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)
    # With a PCA the queries go through it as the exact kind's do.
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
    g, q = unit(rng.standard_normal((400, 8)) @ basis), unit(rng.standard_normal((30, 8)) @ basis)
    index = gallery.build(g, kind="exact_bf16", pca_dim=8, progress=False)
    np.testing.assert_array_equal(gallery.search(index, q, 5)[1], brute_force(q, g, 5)[1])


def test_registry_is_covered():
    assert sorted(KINDS) == sorted(GENEROUS)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_approximate_kinds_reach_high_recall(people, kind):
    g, _, q, _ = people
    index = gallery.build(g, kind=kind, params=GENEROUS[kind], progress=False)
    _, found = gallery.search(index, q, 10)
    _, truth = exact.exact_topk(q, g, 10)
    assert exact.recall_at_k(found, truth) >= 0.9


def test_pca_onto_the_data_subspace_keeps_exact_results():
    # Rank-8 data in 64-d: a PCA to 8 dimensions loses nothing, so distances and ranks stay.
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
    g = unit(rng.standard_normal((400, 8)) @ basis)
    q = unit(rng.standard_normal((30, 8)) @ basis)
    index = gallery.build(g, kind="exact", pca_dim=8, progress=False)
    distances, indices = gallery.search(index, q, 5)
    want_d, want_i = brute_force(q, g, 5)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-4)


def test_pca_preserves_top1_on_separated_identities():
    # 10 identities: their centres span 9 dimensions, which a PCA to 16 keeps.
    g, g_pids, q, q_pids = identities(10, 20, 64, noise=0.5, seed=0, num_queries=50)
    index = gallery.build(g, kind="exact", pca_dim=16, progress=False)
    _, indices = gallery.search(index, q, 1)
    _, truth = exact.exact_topk(q, g, 1)
    np.testing.assert_array_equal(g_pids[truth[:, 0]], q_pids)
    np.testing.assert_array_equal(g_pids[indices[:, 0]], g_pids[truth[:, 0]])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_load_round_trip(people, tmp_path, kind):
    g, _, q, _ = people
    index = gallery.build(g, metadata(len(g)), kind=kind, params=GENEROUS[kind],
                          pca_dim=32 if kind == "ivf" else None, progress=False)
    gallery.save(index, str(tmp_path / "index"))
    loaded = gallery.load(str(tmp_path / "index"))
    before, after = gallery.search(index, q, 5), gallery.search(loaded, q, 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    for field in ("paths", "pids", "camids"):
        np.testing.assert_array_equal(getattr(loaded.metadata, field),
                                      getattr(index.metadata, field))
    info = json.loads((tmp_path / "index" / "index.json").read_text())
    # index.json holds the checksums `load` verifies.
    digests = {name: hashlib.sha256((tmp_path / "index" / name).read_bytes()).hexdigest()
               for name in ("index.faiss", "metadata.npz")}
    assert info == {**index.info(), "params": loaded.params, "sha256": digests}
    assert (info["kind"], info["dim"], info["metric"], info["count"]) == (kind, 64, "euclidean",
                                                                         2000)
    assert sorted(os.listdir(tmp_path)) == ["index"]


def test_hits_metadata(people):
    g, _, q, _ = people
    index = gallery.build(g, metadata(len(g)), progress=False)
    _, indices = gallery.search(index, q[:3], 4)
    found = gallery.hits(index, indices)
    assert found.paths.shape == (3, 4)
    assert found.paths[1, 2] == f"g/{indices[1, 2]:04d}.jpg"
    np.testing.assert_array_equal(found.pids, indices // 10)
    missing = gallery.hits(index, np.array([[-1, 0]]))
    assert (missing.paths.tolist(), missing.pids.tolist()) == ([["", "g/0000.jpg"]], [[-1, 0]])


def test_query_time_parameters(people):
    g, _, q, _ = people
    index = gallery.build(g, kind="ivf", params={"nlist": 32, "nprobe": 1}, progress=False)
    _, found = gallery.search(index, q, 10, search_params={"nprobe": 32})
    np.testing.assert_array_equal(found, exact.exact_topk(q, g, 10)[1])
    with pytest.raises(IndexInputError, match="no query-time parameter \\['ef_search'\\]"):
        gallery.search(index, q, 10, search_params={"ef_search": 8})


def test_refuses_to_overwrite_unless_asked(tmp_path):
    first = gallery.build(random_unit(20, 8, seed=0), progress=False)
    second = gallery.build(random_unit(30, 8, seed=1), progress=False)
    gallery.save(first, str(tmp_path / "index"))
    with pytest.raises(atomic.OutputError, match="already exists"):
        gallery.save(second, str(tmp_path / "index"))
    assert len(gallery.load(str(tmp_path / "index"))) == 20
    gallery.save(second, str(tmp_path / "index"), overwrite=True)
    assert len(gallery.load(str(tmp_path / "index"))) == 30
    assert sorted(os.listdir(tmp_path)) == ["index"]


@pytest.mark.parametrize("call, message", [
    (lambda i, q: gallery.search(i, q[:, :7], 1), "queries are 7-d but the index is 8-d"),
    (lambda i, q: gallery.search(i, q, 21), "k=21 must be in 1..20"),
    (lambda i, q: gallery.build(q, kind="ivf", params={"m": 4}), "ivf takes parameters"),
    (lambda i, q: gallery.build(q, kind="flat"), "unknown index kind 'flat'"),
    (lambda i, q: gallery.build(q, kind="ivf", params={"nlist": 50}), "nlist must be in 1..5"),
    (lambda i, q: gallery.build(q, kind="ivfpq", params={"pq_m": 3}), "pq_m must divide"),
    (lambda i, q: gallery.build(q, kind="ivf", params={"nlist": 4}, train_size=3),
     "nlist=4 needs at least as many training items, got train_size 3"),
    (lambda i, q: gallery.build(q, pca_dim=9), "pca_dim must be in 1..8"),
    (lambda i, q: gallery.build(q, kind="exact_bf16", params={"group": 0}),
     "exact_bf16 needs positive group"),
])
def test_bad_input_is_an_index_input_error(call, message):
    index = gallery.build(random_unit(20, 8, seed=0), progress=False)
    with pytest.raises(IndexInputError, match=message):
        call(index, random_unit(5, 8, seed=1))
