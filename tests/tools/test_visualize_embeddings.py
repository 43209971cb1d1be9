"""The t-SNE picture of train vs test features: identity picking, the nearest-neighbour figure,
and the command on hand-built clusters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO
from tf_reid.evaluation import features_file
from tf_reid.evaluation.features_file import SplitFeatures
from tools.visualize_embeddings import nearest_neighbour_agreement, pick_identities


def test_pick_identities_spreads_over_identities_with_two_images():
    pids = np.array([5, 5, 5, 1, 1, 2, 3, 3, 3, 3, 9, 9])
    # Identities with >= 2 images: 1, 3, 5, 9 (2 has one). Two of them, evenly spread: the
    # first and the last, 1 and 9; their first image each: indices 3 and 10.
    assert pick_identities(pids, 2, 1).tolist() == [3, 10]
    # Three of them: positions round(0, 1.5, 3) = 0, 2, 3 -> 1, 5, 9; two images each.
    assert pick_identities(pids, 3, 2).tolist() == [0, 1, 3, 4, 10, 11]
    assert pick_identities(pids, 10, 10).tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert pick_identities(np.array([1, 2, 3]), 5, 5).tolist() == []


def test_nearest_neighbour_agreement_by_hand():
    # On a line: 0 and 1 are each other's nearest (both pid 7: agree); 10 and 12 likewise,
    # but their pids differ (8, 7): both disagree.
    points = np.array([[0.0], [1.0], [10.0], [12.0]])
    assert nearest_neighbour_agreement(points, np.array([7, 7, 8, 7])) == 0.5
    assert nearest_neighbour_agreement(points, np.array([7, 7, 8, 8])) == 1.0


def clusters(num_identities: int, per_identity: int, first_pid: int, seed: int
             ) -> SplitFeatures:
    """Identities as tight clusters around far-apart centres (spread 0.01 vs centres ~10
    apart): every image's nearest other image is of its own identity, in any faithful map."""
    rng = np.random.default_rng(seed)
    centres = 10 * np.eye(num_identities, 32)
    pids = np.repeat(np.arange(num_identities), per_identity)
    global_ = (centres[pids] + 0.01 * rng.normal(size=(len(pids), 32))).astype(np.float32)
    n = len(pids)
    return SplitFeatures(global_, None, (pids + first_pid).astype(np.int64),
                         np.arange(n, dtype=np.int64) % 2, np.array([f"{i}.jpg" for i in range(n)]),
                         np.full(n, -1, np.int64), np.full(n, -1, np.int64))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.visualize_embeddings", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_train_and_test_panels(tmp_path):
    splits = {"query": clusters(6, 2, 100, 1), "gallery": clusters(6, 3, 100, 2),
              "train": clusters(8, 4, 0, 3)}
    features_file.save(str(tmp_path / "f.npz"), splits)
    result = run(f"--features={tmp_path / 'f.npz'}", f"--output_dir={tmp_path / 'out'}",
                 "--num_identities=5", "--max_per_identity=4", "--perplexity=5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # train: 5 of its 8 identities, 4 images each; test: 5 of 6, 2 queries + 3 gallery each,
    # at most 4 kept. Tight clusters: 100% in the features and in the map.
    assert lines[0] == ("train: 5 identities, 20 images; nearest other image of the same "
                        "identity: 100.0% in feature space, 100.0% in the t-SNE map")
    assert lines[1] == ("test: 5 identities, 20 images; nearest other image of the same "
                        "identity: 100.0% in feature space, 100.0% in the t-SNE map")
    assert lines[2] == f"wrote {tmp_path / 'out' / 'embeddings.png'}"
    with Image.open(tmp_path / "out" / "embeddings.png") as picture:
        assert picture.size == (1000, 520)  # two 5 x 5.2 inch panels at 100 dpi


def test_without_a_train_split_only_the_test_panel(tmp_path):
    features_file.save(str(tmp_path / "f.npz"), {"query": clusters(3, 2, 0, 1),
                                                 "gallery": clusters(3, 2, 0, 2)})
    result = run(f"--features={tmp_path / 'f.npz'}", f"--output_dir={tmp_path / 'out'}",
                 "--perplexity=3")
    assert result.returncode == 0, result.stderr
    assert "has no train split" in result.stdout.splitlines()[0]
    with Image.open(tmp_path / "out" / "embeddings.png") as picture:
        assert picture.size == (500, 520)
