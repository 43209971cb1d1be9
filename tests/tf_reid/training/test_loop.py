"""The evaluation during training follows the protocol the TFRecords' manifest records."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.evaluation.conftest import (make_classic_tfrecords, make_tfrecords,
                                               reference_single_gallery_shot, tiny_model)
from tf_reid.evaluation import extract
from tf_reid.data import pk
from tf_reid.training import loop


def test_evaluation_of_cuhk03_classic_is_single_gallery_shot(tmp_path):
    make_tfrecords(str(tmp_path))
    data_dir = make_classic_tfrecords(str(tmp_path))
    student = tiny_model(seed=2)
    config = loop.TrainConfig(data_dirs=(data_dir,), workdir=str(tmp_path / "run"),
                              eval_batch_size=24, eval_flip=False, progress=False)
    evaluate = loop._evaluator(config, student, pk.training_sets([data_dir]))
    got = evaluate()
    assert list(got) == ["global"]

    # The slow per-query reference on L2-normalised global features of the model called
    # directly, 10 samplings seeded 0 (torchreid's eval_cuhk03 repeats).
    query, gallery = (extract.extract_split(student.__call__, data_dir, split, 32, 16,
                                            with_local=False, progress=False)
                      for split in ("query", "gallery"))
    q = query.global_ / np.linalg.norm(query.global_, axis=1, keepdims=True)
    g = gallery.global_ / np.linalg.norm(gallery.global_, axis=1, keepdims=True)
    dist = np.sqrt(((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(axis=2))
    cmc, mean_ap, evaluated = reference_single_gallery_shot(
        dist, query.pids, gallery.pids, query.camids, gallery.camids, 50, repeats=10, seed=0)
    assert evaluated == 24
    assert got["global"] == pytest.approx({
        "rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap, "mINP": mean_ap,
        "num_query": 24, "skipped_queries": 0}, abs=1e-9)


@pytest.mark.parametrize("settings, problem", [
    ({"mutual_views": "independent"}, "needs >= 2 students"),
    ({"mutual_views": "independent", "students": 2, "generated_per_batch": 2}, "no generated"),
    ({"mutual_views": "each"}, "must be one of"),
])
def test_views_of_their_own_need_students_and_real_images(tmp_path, settings, problem):
    config = loop.TrainConfig(data_dirs=(str(tmp_path / "no_data"),),
                              workdir=str(tmp_path / "run"), **settings)
    with pytest.raises(ValueError, match=problem):
        loop.train(config)
    assert not (tmp_path / "run").exists(), "refused before anything is written"
