"""Every experiment flagfile expands (nested includes) to flags that tf_reid.train defines."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags

import tf_reid.train
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.flags"))
FLAGS = flags.FLAGS
tf_reid.train.define_flags()


def expand(path: pathlib.Path) -> dict[str, str]:
    """The flagfile's settings after its includes, the later of two settings winning."""
    values = {}
    for arg in FLAGS.read_flags_from_files([f"--flagfile={path.relative_to(REPO)}"],
                                           force_gnu=False):
        name, _, value = arg.lstrip("-").partition("=")
        values[name] = value
    return values


@pytest.fixture(autouse=True)
def from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles name their includes relative to the repository root


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_flag_is_a_training_flag(path):
    values = expand(path)
    for name in values:
        name = name[2:] if name.startswith("no") and name[2:] in FLAGS else name
        assert name in FLAGS and FLAGS.find_module_defining_flag(name) in (
            "tf_reid.train", "__main__"), f"{path.name}: --{name}"


DATASETS = ["market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_variants(dataset):
    plain = expand(REPO / "configs" / f"{dataset}.flags")
    assert plain["data_dir"] == f"data/{dataset}" and plain["workdir"] == f"runs/{dataset}"
    assert plain["backbone"] == "resnet50" and plain["margin"] == "0.3"
    assert plain["learning_rate"] == "1e-3" and plain["decay_epochs"] == "80,160"
    mutual = expand(REPO / "configs" / f"{dataset}_mutual.flags")
    assert mutual["students"] == "2" and mutual["workdir"] == f"runs/{dataset}_mutual"
    assert mutual["learning_rate"] == "3e-4" and mutual["decay_epochs"] == "60,120"
    baseline = expand(REPO / "configs" / f"{dataset}_baseline.flags")
    assert baseline["local_triplet_weight"] == "0"
    assert baseline["workdir"] == f"runs/{dataset}_baseline"
