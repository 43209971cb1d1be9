"""The evaluation CLI end to end: a tiny workdir on synthetic TFRecords with a Market-style
multi_query split, saved features (with the train and multi_query splits), their verification
view, and the same images as CUHK03-classic TFRecords, scored single-gallery-shot."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.tf_reid.evaluation.conftest import (make_classic_tfrecords, make_tfrecords,
                                               make_workdir, reference_single_gallery_shot,
                                               tiny_model)
from tests.tf_reid.evaluation.references import re_ranking_dense, reference_evaluate
from tf_reid.evaluation import extract, features_file, matching, verification
from tf_reid.training.workdir import load_students
from tfrecords_builder import synthetic, writer
from tfrecords_builder.records import MULTI_QUERY

NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard", "oneDNN")
VARIANTS = ["global", "global+rerank", "global+local", "global+local+rerank"]
# The table's rows with --multi_query=mean: each variant, then its multi-query twin.
ROWS = [row for name in VARIANTS for row in (name, f"{name} (multi-query mean)")]
KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "skipped_queries"}
FPR_KEYS = ["1e-04", "1e-03", "1e-02"]  # the default FPRs of --verification, in table order


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tf_reid.evaluate", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def add_multi_query(root: str, data_dir: str) -> None:
    """Rewrites `make_tfrecords(root)`'s output with a multi_query split laid out as
    `tfrecords_builder.market1501` makes it from gt_bbox/: every test image again (as the
    release's query images are among its hand-drawn boxes), except those of one query's identity
    and camera, which has none. 4 identities x 2 cameras x 3 images, less 3: 21 images."""
    parsed = synthetic.parse(os.path.join(root, "synthetic"))
    left_out = (parsed.of("query")[0].pid, parsed.of("query")[0].camid)
    boxes = tuple(dataclasses.replace(r, split=MULTI_QUERY) for r in parsed.records
                  if r.split != "train" and (r.pid, r.camid) != left_out)
    writer.build(dataclasses.replace(parsed, records=parsed.records + boxes), data_dir,
                 overwrite=True, progress=False)


def finished(evaluated: dict, name: str) -> subprocess.CompletedProcess:
    """The result of the fixture's command left running as `name`, waited for once (several
    tests read it)."""
    done = evaluated["done"]
    if name not in done:
        done[name] = finish(evaluated[name])
    return done[name]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Runs the CLI on a tiny workdir, saving the train and multi_query splits too and ranking
    with multi-query pooling (and, meanwhile, with the same model on CUHK03-classic TFRecords of
    the same images); then on its features, multi-query again (bad input:
    tests/tools/test_bad_input.py). The last two also report the verification view.

    The command lines overlap in time (each spends seconds importing TensorFlow); the last two,
    evaluating the saved features and the classic TFRecords, are left running for the tests
    that read them.
    """
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = make_tfrecords(str(root))
    add_multi_query(str(root), data_dir)
    classic_dir = make_classic_tfrecords(str(root))
    workdir = make_workdir(str(root), data_dir, tiny_model())
    features = root / "features.npz"
    classic = start(f"--workdir={workdir}", f"--data_dir={classic_dir}", "--rerank",
                    "--rerank_k1=4", "--rerank_k2=2", f"--save_features={root / 'classic.npz'}",
                    f"--output={root / 'classic.json'}", "--batch_size=24", "--noprogress",
                    "--verification")
    result = finish(start(f"--workdir={workdir}", "--flip", "--local", "--rerank",
                          "--rerank_k1=4", "--rerank_k2=2", f"--save_features={features}",
                          "--save_train", "--multi_query=mean", "--batch_size=5"))
    assert result.returncode == 0, result.stderr
    again = start(f"--features={features}", "--local", f"--output={root / 'again.json'}",
                  "--verification", "--multi_query=mean")
    yield {"root": root, "workdir": workdir, "features": features, "result": result,
           "again": again, "classic": classic, "done": {}}
    for process in (again, classic):  # reaped even when their tests were skipped
        process.wait(timeout=300)
        process.stdout.close()
        process.stderr.close()


def test_cli_writes_eval_json_and_prints_a_table(evaluated):
    workdir, features, result = (evaluated[k] for k in ("workdir", "features", "result"))
    report = json.loads(pathlib.Path(workdir, "eval.json").read_text())
    assert list(report["metrics"]) == sorted(ROWS)
    for row in report["metrics"].values():
        assert set(row) == KEYS
        assert row["num_query"] == 8 and row["skipped_queries"] == 0
        assert 0 < row["mINP"] <= 1 and 0 < row["mAP"] <= 1
        assert row["rank1"] <= row["rank5"] <= row["rank10"]
    assert report["options"]["rerank_k1"] == 4 and report["source"]["flip"] is True
    assert report["options"]["multi_query"] == "mean"
    # Each query's own identity-and-camera images (3), but for the one left without any.
    assert report["multi_query"] == {"method": "mean", "images": 21, "mean_pooled": 3.0,
                                     "queries_without_images": 1}
    assert "verification" not in report  # only when asked
    lines = result.stdout.splitlines()
    assert lines[0] == "query 8 images, gallery 16 images"
    # 2 training identities x 2 cameras x 3 images.
    assert lines[1] == (f"wrote {features} (with split train: 12 images, split multi_query: 21 "
                        "images)")
    assert lines[2] == ("multi-query (mean): 21 multi_query images, 3.00 pooled per query (its "
                        "identity and camera); 1 of 8 queries have none and keep their own "
                        "features")
    assert lines[3].split() == ["distance", "rank-1", "rank-5", "rank-10", "mAP", "mINP"]
    # Rows in table order, each the eval.json numbers in %.
    for line, name in zip(lines[4:12], ROWS, strict=True):
        row = report["metrics"][name]
        assert line.split() == name.split() + [f"{100 * row[k]:.2f}"
                                               for k in ("rank1", "rank5", "rank10", "mAP", "mINP")]
    assert lines[-1] == f"wrote {workdir}/eval.json"
    for line in (result.stdout + result.stderr).splitlines():
        assert not any(n in line for n in NOISE), line


def test_saved_features_are_the_restored_models_and_round_trip(evaluated):
    root, workdir, features = (evaluated[k] for k in ("root", "workdir", "features"))
    query, gallery = (features_file.load(str(features), s) for s in ("query", "gallery"))
    assert (len(query), len(gallery)) == (8, 16)
    assert query.local.shape == (8, 4, 128)
    metadata = features_file.load_metadata(str(features))
    assert metadata["data_dir"] == str(root / "data") and metadata["flip"] is True
    assert "single_gallery_shot" not in metadata  # synthetic data: multi-shot
    assert metadata["splits"] == {"query": "query", "gallery": "gallery", "train": "train",
                                  "multi_query": "multi_query"}
    # --save_train: the train split's images, each once, with their own pids and cameras.
    train = features_file.load(str(features), "train")
    records = [r for r in synthetic.parse(str(root / "synthetic")).records if r.split == "train"]
    assert sorted(zip(train.paths.tolist(), train.pids.tolist(), train.camids.tolist())) == \
        sorted((r.path, r.pid, r.camid) for r in records)
    assert len(records) == 12 and train.local.shape == (12, 4, 128)
    # The same numbers as extracting here with the checkpoint restored by the library.
    model_fn = extract.keras_model_fn(load_students(str(workdir))[0])
    multi_query = features_file.load(str(features), MULTI_QUERY)
    for split, saved in (("gallery", gallery), ("train", train), (MULTI_QUERY, multi_query)):
        want = extract.extract_split(model_fn, str(root / "data"), split, 32, 16, flip=True,
                                     progress=False)
        np.testing.assert_allclose(saved.global_, want.global_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(saved.local, want.local, rtol=1e-5, atol=1e-5)
        assert saved.paths.tolist() == want.paths.tolist()

    # Evaluating the saved file (train split and all) needs no model and reproduces the metrics,
    # multi-query included (its split read from the file).
    result = finished(evaluated, "again")
    assert result.returncode == 0, result.stderr
    again = json.loads((root / "again.json").read_text())["metrics"]
    first = json.loads((root / "workdir" / "eval.json").read_text())["metrics"]
    assert list(again) == ["global", "global (multi-query mean)", "global+local",
                           "global+local (multi-query mean)"]
    for name in again:
        assert again[name] == pytest.approx(first[name])


def loop_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances of L2-normalised rows, one pair at a time, in float64."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.array([[np.sqrt(np.sum((x - y) ** 2)) for y in b] for x in a.astype(np.float64)])


def loop_multi_query(query, multi_query) -> tuple[np.ndarray, np.ndarray]:
    """(global [Q, D], local [Q, h, c]) of every query pooled one at a time: the mean of the
    L2-normalised features (each stripe normalised) of the multi-query images found by a loop
    to share its pid and camid, or its own features when there are none."""
    def unit(v):
        return v / np.linalg.norm(v)

    globals_, locals_ = [], []
    for q in range(len(query)):
        rows = [m for m in range(len(multi_query)) if multi_query.pids[m] == query.pids[q]
                and multi_query.camids[m] == query.camids[q]]
        split, own = (multi_query, rows) if rows else (query, [q])
        globals_.append(np.mean([unit(split.global_[i].astype(np.float64)) for i in own], axis=0))
        locals_.append(np.mean([[unit(stripe.astype(np.float64)) for stripe in split.local[i]]
                                for i in own], axis=0))
    return np.array(globals_), np.array(locals_)


def test_multi_query_rows_match_a_per_query_reference(evaluated):
    root, features = evaluated["root"], str(evaluated["features"])
    report = json.loads((root / "workdir" / "eval.json").read_text())["metrics"]
    query, gallery, multi_query = (features_file.load(features, s)
                                   for s in ("query", "gallery", MULTI_QUERY))
    pooled_global, pooled_local = loop_multi_query(query, multi_query)
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    dist = loop_distances(pooled_global, gallery.global_)
    # The gallery ranked once per pooled query, junk removed (same pid and camera), by the slow
    # per-query reference; re-ranking and the aligned local distance on the pooled queries too.
    matrices = {
        "global": dist,
        "global+rerank": re_ranking_dense(
            dist.astype(np.float32),
            loop_distances(pooled_global, pooled_global).astype(np.float32),
            loop_distances(gallery.global_, gallery.global_).astype(np.float32), k1=4, k2=2,
            lambda_value=0.3),
        "global+local": dist + matching.local_distances(pooled_local.astype(np.float32),
                                                        gallery.local),
    }
    for name, matrix in matrices.items():
        cmc, mean_ap, mean_inp, evaluated_queries, _ = reference_evaluate(matrix, *ids, 10,
                                                                          "standard")
        assert evaluated_queries == 8
        assert report[f"{name} (multi-query mean)"] == pytest.approx({
            "rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap, "mINP": mean_inp,
            "num_query": 8, "skipped_queries": 0}, abs=1e-6), name


def loop_pairs(dist, query, gallery) -> tuple[list[float], list[float]]:
    """(positive, negative) pair distances, one pair at a time: same pid in another camera,
    different pid; same pid in the same camera is left out."""
    positives, negatives = [], []
    for q, g in np.ndindex(dist.shape):
        if query.pids[q] != gallery.pids[g]:
            negatives.append(dist[q, g])
        elif query.camids[q] != gallery.camids[g]:
            positives.append(dist[q, g])
    return positives, negatives


def assert_summary(got: dict, positives: list[float], negatives: list[float]) -> None:
    """`got` (from eval.json) is `verification.summary` of these pairs, up to float32 rounding."""
    want = verification.summary(np.array(positives), np.array(negatives))
    assert got["tpr_at_fpr"] == pytest.approx(want.pop("tpr_at_fpr"), abs=1e-6)
    assert {k: v for k, v in got.items() if k != "tpr_at_fpr"} == pytest.approx(want, abs=1e-6)


def assert_png(path: pathlib.Path, rows: int) -> None:
    """`path` is a PNG with something drawn, about `rows` rows of two plots in size."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 500 and height > 250 * rows
        low, high = image.convert("L").getextrema()
        assert high - low > 100


def test_verification_of_the_saved_features(evaluated):
    root = evaluated["root"]
    result = finished(evaluated, "again")
    assert result.returncode == 0, result.stderr
    report = json.loads((root / "again.json").read_text())
    assert list(report["verification"]) == ["global", "global+local"]
    for row in report["verification"].values():
        # Per query (pid p, camera c) the gallery holds 2 images of p in c (left out), 2 of p
        # in the other camera (positives) and 4 x 3 of the other identities (negatives).
        assert (row["num_positive"], row["num_negative"]) == (8 * 2, 8 * 12)
        assert set(row["tpr_at_fpr"]) == set(FPR_KEYS)  # eval.json sorts keys
        assert 0 <= row["auc"] <= 1
    # The global numbers from the saved features, computed here one pair at a time.
    query, gallery = (features_file.load(str(evaluated["features"]), s)
                      for s in ("query", "gallery"))
    positives, negatives = loop_pairs(loop_distances(query.global_, gallery.global_), query,
                                      gallery)
    assert_summary(report["verification"]["global"], positives, negatives)
    # global+local adds a positive local distance to every pair.
    for key in ("positive_mean", "negative_mean"):
        assert report["verification"]["global+local"][key] > report["verification"]["global"][key]

    lines = result.stdout.splitlines()
    start = lines.index("verification (%)")
    assert lines[start + 1].split() == ["distance", "TPR@1e-04", "TPR@1e-03", "TPR@1e-02", "AUC"]
    for line, name in zip(lines[start + 2:start + 4], ["global", "global+local"]):
        row = report["verification"][name]
        assert line.split() == [name] + [f"{100 * v:.2f}" for v in
                                         [*(row["tpr_at_fpr"][k] for k in FPR_KEYS), row["auc"]]]
    assert lines[start + 4] == "pairs: 16 positive (same identity, other camera), 96 negative"
    assert lines[-2:] == [f"wrote {root / 'again_verification.png'}",
                          f"wrote {root / 'again.json'}"]
    assert_png(root / "again_verification.png", rows=2)


def test_cuhk03_classic_is_scored_single_gallery_shot(evaluated):
    root = evaluated["root"]
    result = finished(evaluated, "classic")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["query 24 images, gallery 24 images", f"wrote {root / 'classic.npz'}",
                         "single-gallery-shot (CUHK03 classic): 10 random gallery samplings, "
                         "seed 0"]
    report = json.loads((root / "classic.json").read_text())
    # torchreid's eval_cuhk03 protocol: 10 samplings, here seeded for reproducible numbers.
    settings = {"repeats": 10, "seed": 0}
    assert report["options"]["single_gallery_shot"] == settings
    assert list(report["metrics"]) == ["global", "global+rerank"]
    # The saved features carry the protocol, so --features evaluates them the same way.
    assert features_file.load_metadata(str(root / "classic.npz"))["single_gallery_shot"] == \
        settings

    # The numbers of the slow per-query reference, on distances computed here from the saved
    # features (the whole query and gallery sets re-ranked first, then sampled).
    query, gallery = (features_file.load(str(root / "classic.npz"), s)
                      for s in ("query", "gallery"))
    np.testing.assert_array_equal(query.paths, gallery.paths)  # every test image is both
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    dist = loop_distances(query.global_, gallery.global_)
    reranked = re_ranking_dense(
        dist.astype(np.float32), loop_distances(query.global_, query.global_).astype(np.float32),
        loop_distances(gallery.global_, gallery.global_).astype(np.float32), k1=4, k2=2,
        lambda_value=0.3)
    for name in report["metrics"]:
        # Four test identities, one image of each sampled: every match is within rank 4.
        assert report["metrics"][name]["rank5"] == 1.0
    for name, matrix in (("global", dist), ("global+rerank", reranked)):
        cmc, mean_ap, evaluated_queries = reference_single_gallery_shot(matrix, *ids, 50,
                                                                        **settings)
        assert evaluated_queries == 24
        assert report["metrics"][name] == pytest.approx({
            "rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap,
            "mINP": mean_ap, "num_query": 24, "skipped_queries": 0}, abs=1e-9), name

    # Verification: the whole gallery, not a sample, and no re-ranked matrix. Per query (pid p,
    # camera c): 3 images of p in c left out (itself included), 3 in the other camera
    # positive, 3 x 6 of the other identities negative.
    assert list(report["verification"]) == ["global"]
    positives, negatives = loop_pairs(dist, query, gallery)
    assert (len(positives), len(negatives)) == (24 * 3, 24 * 18)
    assert_summary(report["verification"]["global"], positives, negatives)
    assert lines[-2:] == [f"wrote {root / 'classic_verification.png'}",
                          f"wrote {root / 'classic.json'}"]
    assert_png(root / "classic_verification.png", rows=1)
