"""Synthetic dataset: layout, split disjointness, determinism, image statistics, parse, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tfrecords_builder import atomic, parser, synthetic
from tfrecords_builder.naming import MARKET_FOLDERS
from tfrecords_builder.records import DatasetError

ARGS = dict(num_identities=12, num_train_identities=5, num_cameras=3,
            images_per_identity_per_camera=3, seed=7)
NAME = re.compile(r"^(\d{4})_c(\d+)_(\d{4})\.(png|jpg)$")
SMALL = dict(num_identities=4, num_cameras=2, images_per_identity_per_camera=2, height=32,
             width=16)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[str, dict]:
    """One generated dataset (default image size), shared by the read-only tests."""
    root = str(tmp_path_factory.mktemp("gen") / "synthetic")
    return root, synthetic.generate(root, **ARGS)


def listing(root: str) -> dict[str, list[tuple[int, int, int]]]:
    """Split -> sorted (pid, cam, index) of the files in its folder; every name must parse."""
    out = {}
    for split, sub in MARKET_FOLDERS.items():
        names = sorted(os.listdir(os.path.join(root, sub)))
        matches = [NAME.match(n) for n in names]
        assert all(matches), names
        out[split] = [tuple(int(g) for g in m.groups()[:3]) for m in matches]
    return out


def file_bytes(root: str) -> dict[str, bytes]:
    """Relative path -> content of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def load(root: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images [N, H, W, 3] in [0, 1], pids [N] and 1-based cams [N] of one split folder."""
    keys = listing(root)[split]
    folder = os.path.join(root, MARKET_FOLDERS[split])
    images = [np.asarray(Image.open(os.path.join(folder, f"{p:04d}_c{c}_{i:04d}.png")))
              for p, c, i in keys]
    pids, cams = (np.array([key[j] for key in keys]) for j in (0, 1))
    return np.stack(images) / 255.0, pids, cams


def test_layout_and_counts_follow_the_arguments(dataset):
    root, counts = dataset
    files = listing(root)
    pids, cams = ARGS["num_identities"], ARGS["num_cameras"]
    k, n_train = ARGS["images_per_identity_per_camera"], ARGS["num_train_identities"]
    n_test = pids - n_train
    expected = {"train": n_train * cams * k, "query": n_test * cams,
                "gallery": n_test * cams * (k - 1), "train_identities": n_train,
                "test_identities": n_test}
    assert counts == expected
    assert {s: len(f) for s, f in files.items()} == {s: expected[s] for s in files}
    everything = [key for split in files.values() for key in split]
    assert len(set(everything)) == pids * cams * k  # each (pid, cam, index) exactly once
    assert {c for _, c, _ in everything} == set(range(1, cams + 1))  # 1-based cameras
    assert {i for _, _, i in everything} == set(range(k))
    assert sorted(os.listdir(root)) == sorted([*MARKET_FOLDERS.values(), synthetic.PARAMS_FILE,
                                               atomic.MARKER])
    with open(os.path.join(root, synthetic.PARAMS_FILE)) as f:
        params = json.load(f)
    assert {key: params[key] for key in ARGS} == ARGS
    assert (params["height"], params["width"], params["image_format"]) == (128, 64, "png")


def test_identities_disjoint_and_every_query_has_a_cross_camera_match(dataset):
    files = listing(dataset[0])
    train, query, gallery = ({p for p, _, _ in files[s]} for s in ("train", "query", "gallery"))
    assert train.isdisjoint(query) and train.isdisjoint(gallery)
    assert query == gallery
    assert len(train) == ARGS["num_train_identities"]
    assert len(train | query) == ARGS["num_identities"]
    cams = list(range(1, ARGS["num_cameras"] + 1))
    for pid in query:  # one query per camera
        assert sorted(c for p, c, _ in files["query"] if p == pid) == cams
    for pid, cam, _ in files["query"]:
        assert any(p == pid and c != cam for p, c, _ in files["gallery"]), (pid, cam)


def test_images_decode_with_the_requested_size(dataset, tmp_path):
    root, _ = dataset
    for sub in MARKET_FOLDERS.values():
        for name in os.listdir(os.path.join(root, sub)):
            with Image.open(os.path.join(root, sub, name)) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 128))
    synthetic.generate(str(tmp_path / "jpg"), image_format="jpg", **SMALL)
    names = os.listdir(tmp_path / "jpg" / "query")
    assert names and all(n.endswith(".jpg") for n in names)
    with Image.open(tmp_path / "jpg" / "query" / names[0]) as image:
        assert (image.format, image.size) == ("JPEG", (SMALL["width"], SMALL["height"]))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    synthetic.generate(a, seed=1, **SMALL)
    synthetic.generate(b, seed=1, **SMALL)
    synthetic.generate(c, seed=2, **SMALL)
    files_a, files_c = file_bytes(a), file_bytes(c)
    assert files_a == file_bytes(b)
    assert files_a.keys() == files_c.keys()
    images = [p for p in files_a if p.endswith(".png")]
    assert all(files_a[p] != files_c[p] for p in images)


def test_an_image_does_not_depend_on_the_rest_of_the_dataset(tmp_path):
    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    synthetic.generate(small, **{**SMALL, "num_identities": 4, "num_train_identities": 2})
    synthetic.generate(large, **{**SMALL, "num_identities": 7, "num_train_identities": 2})
    files_small, files_large = file_bytes(small), file_bytes(large)
    images = [p for p in files_small if p.endswith(".png")]
    assert images and all(files_small[p] == files_large[p] for p in images)


def centre_bands(images: np.ndarray, bands: int = 4) -> np.ndarray:
    """Mean colour of `bands` horizontal bands of the central half of the width: [N, bands * 3]."""
    n, h, w, _ = images.shape
    centre = images[:, : h // bands * bands, w // 4: w - w // 4]
    return centre.reshape(n, bands, h // bands, -1, 3).mean(axis=(2, 3)).reshape(n, -1)


def pair_distances(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-band feature distances [N, N] of all images, same-pid and same-camera masks [N, N]."""
    parts = [load(root, s) for s in ("train", "query", "gallery")]
    features = centre_bands(np.concatenate([p[0] for p in parts]))
    pids = np.concatenate([p[1] for p in parts])
    cams = np.concatenate([p[2] for p in parts])
    dist = np.linalg.norm(features[:, None] - features[None], axis=-1)
    return dist, pids[:, None] == pids[None], cams[:, None] == cams[None]


def test_identities_are_distinguishable_within_and_across_cameras(dataset):
    dist, same_pid, same_cam = pair_distances(dataset[0])
    off_diagonal = ~np.eye(len(dist), dtype=bool)
    for cam_pairs in (same_cam, ~same_cam):  # camera held fixed, then camera changed
        same = dist[same_pid & cam_pairs & off_diagonal].mean()
        other = dist[~same_pid & cam_pairs].mean()
        assert other > 1.1 * same, (same, other)  # identical clothing everywhere gives ~1.0
    assert (dist[same_pid & off_diagonal] > 0).all()  # no two images of an identity are equal


def test_cameras_change_how_an_identity_looks(dataset):
    dist, same_pid, same_cam = pair_distances(dataset[0])
    off_diagonal = ~np.eye(len(dist), dtype=bool)
    within = dist[same_pid & same_cam & off_diagonal].mean()
    across = dist[same_pid & ~same_cam].mean()
    assert across > 1.1 * within, (across, within)  # identical cameras give ~1.0


def test_cameras_light_the_figure_not_only_the_background():
    height, width = 128, 64
    ident = synthetic.stack([synthetic.identity_params(0, 1)] * 2)
    img = synthetic.stack([synthetic.image_params(0, 1, 1, 0, height, width)] * 2)
    cams = synthetic.stack([synthetic.camera_params(0, 1), synthetic.camera_params(0, 2)])
    images = synthetic.render(ident, cams, img, height, width).astype(float)
    labels = synthetic.occlude(synthetic.person(ident, img, height, width)[0], img)[0]
    figure = (labels != synthetic.BACKGROUND) & (labels != synthetic.OBJECT)
    assert figure.sum() > height * width // 10
    ratio = images[1][figure].mean(axis=0) / images[0][figure].mean(axis=0)  # [3]
    assert np.abs(ratio - 1).max() > 0.05, ratio


def test_boxes_are_misaligned_flipped_and_sometimes_occluded():
    seed, pid, n = 0, 1, 64
    ident = synthetic.stack([synthetic.identity_params(seed, pid)] * n)
    img = synthetic.stack([synthetic.image_params(seed, pid, 1, i, 128, 64) for i in range(n)])
    labels, _ = synthetic.person(ident, img, 128, 64)
    figure = labels != synthetic.BACKGROUND
    top_rows = figure.any(axis=2).argmax(axis=1)  # first row with body in each image
    assert len(set(top_rows.tolist())) > 5  # vertical misalignment
    mirrored = [np.array_equal(figure[i], figure[i, :, ::-1]) for i in range(n)]
    assert not all(mirrored)  # the figure is not symmetric, so flips are visible
    assert len({float(f) for f in img["flip"]}) == 2
    occluded = synthetic.occlude(labels, img)
    assert (occluded != labels).any(axis=(1, 2)).sum() > n // 10


def test_parse_records(dataset, tmp_path):
    root, counts = dataset
    split = synthetic.parse(root)
    assert parser("synthetic") is synthetic.parse
    assert (split.dataset, split.source) == ("synthetic", root)
    assert split.protocol["protocol"] == "single-query"
    assert split.protocol["seed"] == ARGS["seed"]
    assert {s: len(split.of(s)) for s in ("train", "query", "gallery")} == {
        s: counts[s] for s in ("train", "query", "gallery")}
    for record in split.records:
        folder, name = os.path.split(record.path)
        assert folder == MARKET_FOLDERS[record.split]
        pid, cam, _ = (int(g) for g in NAME.match(name).groups()[:3])
        assert (record.pid, record.camid) == (pid, cam - 1)
        assert os.path.isfile(os.path.join(split.source, record.path))
    assert {r.camid for r in split.records} == set(range(ARGS["num_cameras"]))
    assert synthetic.parse(os.path.dirname(root)).source == root  # the parent folder works too


def test_parse_missing_folder_names_it(tmp_path):
    root = str(tmp_path / "data")
    synthetic.generate(root, **SMALL)
    os.rename(os.path.join(root, "query"), os.path.join(root, "query-moved"))
    with pytest.raises(DatasetError) as error:
        synthetic.parse(root)
    message = str(error.value)
    assert os.path.join(root, "query") in message and "\n" not in message
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "nowhere"))):
        synthetic.parse(str(tmp_path / "nowhere"))


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    root = str(tmp_path / "data")
    synthetic.generate(root, seed=1, **SMALL)
    before = file_bytes(root)
    with pytest.raises(atomic.OutputError, match=re.escape(root)):
        synthetic.generate(root, seed=2, **SMALL)
    assert file_bytes(root) == before
    synthetic.generate(root, seed=2, overwrite=True, **SMALL)
    assert synthetic.parse(root).protocol["seed"] == 2
    assert file_bytes(root) != before
    assert os.listdir(tmp_path) == ["data"]  # no partial or old folder left behind


def test_overwrite_never_deletes_a_folder_that_is_not_synthetic(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(atomic.OutputError, match="is not an earlier 'synthetic' output"):
        synthetic.generate(str(tmp_path / "mine"), overwrite=True, **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", [dict(num_cameras=1), dict(images_per_identity_per_camera=1),
                                 dict(num_train_identities=4), dict(num_train_identities=0),
                                 dict(image_format="gif")])
def test_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        synthetic.generate(str(tmp_path / "data"), **{**SMALL, **bad})
    assert not os.path.exists(tmp_path / "data")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.generate_synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_prints_counts_and_refuses_to_overwrite(tmp_path):
    out = str(tmp_path / "cli")
    args = ["--output_dir", out, "--num_identities", "5", "--num_train_identities", "2",
            "--num_cameras", "2", "--images_per_identity_per_camera", "3", "--height", "32",
            "--width", "16", "--image_format", "jpg"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    files = listing(out)
    for split in ("train", "query", "gallery"):
        assert int(rows[split][0]) == len(files[split])
    assert len(files["train"]) == 2 * 2 * 3 and len(files["query"]) == 3 * 2
    assert all(name.endswith(".jpg") for name in os.listdir(os.path.join(out, "query")))

    again = run_cli(*args)
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and out in again.stderr
    assert run_cli(*args, "--overwrite", "--seed", "5").returncode == 0
    assert synthetic.parse(out).protocol["seed"] == 5


def test_cli_does_not_import_tensorflow():
    code = "import sys, tools.generate_synthetic; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
