"""The rank-list and CMC pictures, drawn from hand-built features over constant-colour images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO, write_images
from tests.tf_reid.data.test_pk import colour_png
from tests.tf_reid.evaluation.conftest import (A, B, features, hand_built_features,
                                                reference_single_gallery_shot)
from tf_reid.evaluation import features_file, metrics
from tf_reid.evaluation.features_file import SplitFeatures
from tfrecords_builder import writer
from tfrecords_builder.records import ParsedDataset, Record
from tools.visualize_ranks import cmc_curves

GREEN, RED, QUERY_GREY = (0, 170, 0), (220, 0, 0), (40, 40, 40)
CURVE = (31, 119, 180)


def colour(pid: int, index: int) -> tuple[int, int, int]:
    """The constant colour of `colour_png(pid, index)`."""
    return (pid * 8, index * 30, 77)


def test_ranks_and_cmc_pictures(tmp_path):
    # The hand-built retrieval of tests/tf_reid/evaluation/conftest.py: queries on a line at
    # x = 0 (pid 1), 3.1 (pid 2), 5 (pid 3); gallery x = 0, 1, 2, 4, 3, 5 with pids 1 2 1 1 2 3
    # and cameras 0 1 1 1 1 0. Image i of split s has the colour (pid * 8, i * 30, 77).
    q_pids, q_cams = [1, 2, 3], [0, 0, 0]
    g_pids, g_cams = [1, 2, 1, 1, 2, 3], [0, 1, 1, 1, 1, 0]
    records, paths = [Record("train/0009_0.png", 9, 0, "train")], {"query": [], "gallery": []}
    write_images(tmp_path / "src", ["train/0009_0.png"], colour_png(9, 0))
    for split, pids, cams in (("query", q_pids, q_cams), ("gallery", g_pids, g_cams)):
        for i, (pid, cam) in enumerate(zip(pids, cams)):
            path = f"{split}/{pid:04d}_c{cam}_{i}.png"
            write_images(tmp_path / "src", [path], colour_png(pid, i))
            records.append(Record(path, pid, cam, split))
            paths[split].append(path)
    writer.build(ParsedDataset("hand", str(tmp_path / "src"), tuple(records)),
                 str(tmp_path / "data"), progress=False)
    query = features([[0, 0], [3.1, 0], [5, 0]], [A, A, A], q_pids, q_cams)
    gallery = features([[0, 0], [1, 0], [2, 0], [4, 0], [3, 0], [5, 0]], [A, B, A, A, A, A],
                       g_pids, g_cams)
    query = SplitFeatures(query.global_, query.local, query.pids, query.camids,
                          np.array(paths["query"]), query.tracklets, query.frames)
    gallery = SplitFeatures(gallery.global_, gallery.local, gallery.pids, gallery.camids,
                            np.array(paths["gallery"]), gallery.tracklets, gallery.frames)
    features_file.save(str(tmp_path / "f.npz"), {"query": query, "gallery": gallery})

    result = subprocess.run(
        [sys.executable, "-m", "tools.visualize_ranks", f"--features={tmp_path / 'f.npz'}",
         f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", "--queries=0,1",
         "--top_k=4", "--cell_height=16", "--cell_width=8", "--max_rank=10", "--nonormalize"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"wrote {tmp_path / 'out' / 'ranks.png'}")

    ranks = np.asarray(Image.open(tmp_path / "out" / "ranks.png").convert("RGB"))
    # Width 4 + (1 + 4) * (8 + 2 * 4 + 4) + 12, height 4 + 2 * (16 + 2 * 4 + 14 + 4).
    assert ranks.shape == (88, 116, 3)
    # Top 4 without junk (g0 is q0's pid in q0's camera): q0 -> g1, g2, g4, g3;
    # q1 -> g4, g3, g2, g5.
    want = {0: [1, 2, 4, 3], 1: [4, 3, 2, 5]}
    for row, q in enumerate((0, 1)):
        y = 4 + row * 42
        assert tuple(ranks[y, 4]) == QUERY_GREY
        assert tuple(ranks[y + 4 + 8, 4 + 4 + 4]) == colour(q_pids[q], q)
        for column, g in enumerate(want[q], start=1):
            x = 4 + column * 20 + 12
            border = GREEN if g_pids[g] == q_pids[q] else RED
            for corner in ((y, x), (y + 23, x + 15), (y + 3, x + 3)):
                assert tuple(ranks[corner]) == border, (q, g, corner)
            # The right gallery image sits inside the border (constant colours survive resizing).
            assert tuple(ranks[y + 4 + 8, x + 4 + 4]) == colour(g_pids[g], g), (q, g)

    cmc = np.asarray(Image.open(tmp_path / "out" / "cmc.png").convert("RGB"))
    assert cmc.shape == (360, 480, 3)
    # q0's first match is at rank 2, q1's at rank 1 (q2 has none and is skipped): the curve
    # starts at 50% and reaches 100% at rank 2. Plot area: x 60..459 for ranks 1..10, y 309
    # (0%) up to 30 (100%).
    assert tuple(cmc[round(309 - 0.5 * 279), 60]) == CURVE
    assert tuple(cmc[30, 60 + round(399 / 9)]) == CURVE
    assert tuple(cmc[30, 459]) == CURVE
    assert tuple(cmc[309, 200]) == (0, 0, 0)  # the x axis


def test_cmc_curves_follow_the_protocol_the_features_file_records():
    query, gallery = hand_built_features()
    distmat = np.abs(query.global_[:, :1] - gallery.global_[:, 0][None, :])
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    multi = cmc_curves({"global": distmat}, query, gallery, 10, {"data_dir": "x"})
    np.testing.assert_array_equal(multi["global"], metrics.evaluate_rank(distmat, *ids, 10)[0])
    settings = {"repeats": 10, "seed": 0}
    sampled = cmc_curves({"global": distmat}, query, gallery, 10,
                         {"single_gallery_shot": settings})
    want, _, _ = reference_single_gallery_shot(distmat, *ids, 10, **settings)
    np.testing.assert_allclose(sampled["global"], want, rtol=0, atol=1e-12)
    # Multi-shot: q0's first match is second, q1's first. Sampled, q1's match is third whenever
    # g1 rather than g4 is drawn for pid 2 (see test_protocols.test_score_follows_the_protocol).
    np.testing.assert_array_equal(multi["global"][:3], [0.5, 1.0, 1.0])
    assert sampled["global"][1] < 1.0
