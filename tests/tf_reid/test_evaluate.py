"""The evaluation CLI end to end: a tiny workdir on synthetic TFRecords, saved features, errors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.tf_reid.evaluation.conftest import make_tfrecords, make_workdir, tiny_model
from tf_reid.evaluation import extract, features_file
from tf_reid.training.workdir import load_students

NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard", "oneDNN")
VARIANTS = ["global", "global+rerank", "global+local", "global+local+rerank"]
KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "skipped_queries"}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tf_reid.evaluate", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Runs the CLI on a tiny workdir (and, meanwhile, on a missing one); then on its features.

    The command lines overlap in time (each spends seconds importing TensorFlow); the last one,
    evaluating the saved features, is left running for the test that reads it.
    """
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = make_tfrecords(str(root))
    workdir = make_workdir(str(root), data_dir, tiny_model())
    features = root / "features.npz"
    missing = start(f"--workdir={root / 'nothing'}")
    result = finish(start(f"--workdir={workdir}", "--flip", "--local", "--rerank",
                          "--rerank_k1=4", "--rerank_k2=2", f"--save_features={features}",
                          "--batch_size=5"))
    assert result.returncode == 0, result.stderr
    again = start(f"--features={features}", "--local", f"--output={root / 'again.json'}")
    yield {"root": root, "workdir": workdir, "features": features, "result": result,
           "again": again, "missing": missing}
    for process in (again, missing):  # reaped even when the tests reading them were skipped
        process.wait(timeout=300)
        process.stdout.close()
        process.stderr.close()


def test_cli_writes_eval_json_and_prints_a_table(evaluated):
    workdir, features, result = (evaluated[k] for k in ("workdir", "features", "result"))
    report = json.loads(pathlib.Path(workdir, "eval.json").read_text())
    assert list(report["metrics"]) == sorted(VARIANTS)
    for row in report["metrics"].values():
        assert set(row) == KEYS
        assert row["num_query"] == 8 and row["skipped_queries"] == 0
        assert 0 < row["mINP"] <= 1 and 0 < row["mAP"] <= 1
        assert row["rank1"] <= row["rank5"] <= row["rank10"]
    assert report["options"]["rerank_k1"] == 4 and report["source"]["flip"] is True
    lines = result.stdout.splitlines()
    assert lines[0] == "query 8 images, gallery 16 images"
    assert lines[1] == f"wrote {features}"
    assert lines[2].split() == ["distance", "rank-1", "rank-5", "rank-10", "mAP", "mINP"]
    # Rows in table order, each the eval.json numbers in %.
    for line, name in zip(lines[3:7], VARIANTS):
        row = report["metrics"][name]
        assert line.split() == [name] + [f"{100 * row[k]:.2f}"
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
    # The same numbers as extracting here with the checkpoint restored by the library.
    model_fn = extract.keras_model_fn(load_students(str(workdir))[0])
    want = extract.extract_split(model_fn, str(root / "data"), "gallery", 32, 16, flip=True,
                                 progress=False)
    np.testing.assert_allclose(gallery.global_, want.global_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gallery.local, want.local, rtol=1e-5, atol=1e-5)
    assert gallery.paths.tolist() == want.paths.tolist()

    # Evaluating the saved file needs no model and reproduces the metrics.
    result = finish(evaluated["again"])
    assert result.returncode == 0, result.stderr
    again = json.loads((root / "again.json").read_text())["metrics"]
    first = json.loads((root / "workdir" / "eval.json").read_text())["metrics"]
    assert list(again) == ["global", "global+local"]
    for name in again:
        assert again[name] == pytest.approx(first[name])


def test_a_missing_workdir_is_one_error_line(evaluated):
    result = finish(evaluated["missing"])
    assert result.returncode == 1
    nothing = evaluated["root"] / "nothing"
    assert result.stderr.strip().splitlines() == [f"error: {nothing}: no such workdir"]
    assert result.stdout == ""

