"""PK sampling: P identities x K images per batch, coverage, determinism, replicas."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import REPO, write_generated, write_images
from tf_reid.data import augment, pk
from tfrecords_builder import writer
from tfrecords_builder.records import DatasetError, ParsedDataset, Record

OFF = augment.AugmentConfig(flip=False, pad=0, erasing_probability=0.0)
ALL_ON = augment.AugmentConfig(normalize=True)  # every step, pipeline normalisation included


def colour_png(pid: int, index: int) -> bytes:
    """A constant-colour image whose red channel names the pid and green the image index."""
    pixels = np.empty((8, 4, 3), np.uint8)
    pixels[...] = (pid * 8, index * 30, 77)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(root, counts: dict[int, int], records_per_shard: int = 10) -> dict:
    """TFRecords where train pid p has counts[p] images; one query/gallery image each."""
    records = []
    for pid, n in counts.items():
        for index in range(n):
            path = f"train/{pid:04d}_c1_{index}.png"
            write_images(root / "src", [path], colour_png(pid, index))
            records.append(Record(path, pid, index % 2, "train"))
    write_images(root / "src", ["q/0031_c1_0.png", "g/0031_c2_0.png"], colour_png(31, 0))
    records += [Record("q/0031_c1_0.png", 31, 0, "query"), Record("g/0031_c2_0.png", 31, 1, "gallery")]
    split = ParsedDataset("test", str(root / "src"), tuple(records))
    return writer.build(split, str(root / "out"), records_per_shard=records_per_shard, progress=False)


def batches(data_dir, count, **kwargs):
    kwargs = {"num_identities": 4, "num_instances": 3, "height": 16, "width": 8,
              "augment_config": OFF, **kwargs}
    ds = pk.pk_dataset(data_dir if isinstance(data_dir, list) else str(data_dir),
                       **kwargs).take(count)
    return [(images.numpy(), labels.numpy()) for images, labels in ds]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """24 identities with 1..7 images (several fewer than K=3), spread over many shards."""
    root = tmp_path_factory.mktemp("uneven")
    manifest = write_dataset(root, {pid: 1 + pid % 7 for pid in range(1, 25)})
    assert len(manifest["splits"]["train"]["shards"]) > 4
    return root / "out", manifest


def check_pk(images, labels, label_map, counts, P, K):
    """Exactly P distinct identities, K consecutive images each, every image of its identity."""
    pid_of = {label: int(pid) for pid, label in label_map.items()}
    blocks = labels.reshape(P, K)
    assert (blocks == blocks[:, :1]).all(), labels
    assert len(set(blocks[:, 0])) == P
    for (label, image) in zip(labels, images):
        red, green = image[0, 0, 0], image[0, 0, 1]
        assert np.all(image[..., 0] == red)
        pid = pid_of[int(label)]
        assert red == pid * 8, "an image of another identity"
        assert green / 30 < counts[pid]
    for block, block_images in zip(blocks, images.reshape(P, K, *images.shape[1:])):
        indices = [int(round(im[0, 0, 1] / 30)) for im in block_images]
        n = counts[pid_of[int(block[0])]]
        if n >= K:
            assert len(set(indices)) == K, "drawn with replacement although n >= K"


def test_every_batch_is_p_identities_times_k(uneven):
    data_dir, manifest = uneven
    counts = {pid: 1 + pid % 7 for pid in range(1, 25)}
    got = batches(data_dir, 30)
    assert len(got) == 30
    for images, labels in got:
        assert images.shape == (12, 16, 8, 3) and labels.shape == (12,)
        check_pk(images, labels, manifest["label_map"], counts, P=4, K=3)


def test_an_epoch_covers_every_identity_once(uneven):
    data_dir, _ = uneven
    steps = pk.steps_per_epoch(24, 4)
    assert steps == 6
    got = batches(data_dir, 3 * steps)
    for epoch in range(3):
        labels = np.concatenate([l[::3] for _, l in got[epoch * steps:(epoch + 1) * steps]])
        assert sorted(labels) == list(range(24)), f"epoch {epoch}"
    orders = [np.concatenate([l for _, l in got[e * steps:(e + 1) * steps]]) for e in range(3)]
    assert not np.array_equal(orders[0], orders[1]), "identities are reshuffled every epoch"


def test_remainder_identities_are_dropped_not_mixed_into_the_next_pass(tmp_path):
    manifest = write_dataset(tmp_path, {pid: 3 for pid in range(1, 11)})  # 10 ids, P = 4
    got = batches(tmp_path / "out", 8)
    counts = {pid: 3 for pid in range(1, 11)}
    for epoch in range(4):
        labels = np.concatenate([l[::3] for _, l in got[2 * epoch:2 * epoch + 2]])
        assert len(set(labels)) == 8, "8 of 10 identities per pass, none twice"
    for images, labels in got:
        check_pk(images, labels, manifest["label_map"], counts, P=4, K=3)


def test_same_seed_same_batches(uneven):
    data_dir, _ = uneven
    a = batches(data_dir, 4, seed=7, augment_config=ALL_ON)
    b = batches(data_dir, 4, seed=7, augment_config=ALL_ON, num_parallel_calls=1)
    c = batches(data_dir, 4, seed=8, augment_config=ALL_ON)
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia, ib)
    assert any(not np.array_equal(la, lc) for (_, la), (_, lc) in zip(a, c))


def test_start_epoch_resumes_the_same_stream(uneven):
    """Pass e depends only on (seed, e): starting at pass 2 gives what passes 2.. gave."""
    data_dir, _ = uneven
    steps = pk.steps_per_epoch(24, 4)
    whole = batches(data_dir, 4 * steps, seed=3, augment_config=ALL_ON)
    resumed = batches(data_dir, 2 * steps, seed=3, augment_config=ALL_ON, start_epoch=2)
    for (ia, la), (ib, lb) in zip(whole[2 * steps:], resumed):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia, ib)


def test_default_output_is_uint8_for_the_model_to_normalise(uneven):
    data_dir, _ = uneven
    images, _ = next(iter(pk.pk_dataset(str(data_dir), 4, 3, height=16, width=8)))
    assert images.dtype == np.uint8 and images.shape == (12, 16, 8, 3)
    normalised, _ = next(iter(pk.pk_dataset(str(data_dir), 4, 3, height=16, width=8,
                                            augment_config=ALL_ON)))
    assert normalised.dtype == np.float32


def test_random_erasing_blanks_a_rectangle_of_every_image_with_the_mean_pixel(uneven):
    data_dir, _ = uneven
    erase_all = augment.AugmentConfig(flip=False, pad=0, erasing_probability=1.0)
    (images, _), = batches(data_dir, 1, augment_config=erase_all)
    fill = np.array([255.0 * m for m in augment.IMAGENET_MEAN]).astype(np.uint8)  # cast truncates
    for image in images:
        erased = np.all(image == fill, axis=-1)
        rows, cols = np.nonzero(erased)
        assert erased.any() and not erased.all()
        # One filled rectangle; the rest keeps the image's constant colour (blue is 77).
        assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert np.all(image[~erased] == image[~erased][0]) and image[~erased][0, 2] == 77


def test_view_0_is_the_single_view_batch_and_other_views_differ(uneven):
    data_dir, _ = uneven
    on = augment.AugmentConfig()  # flip, pad-crop, erasing; uint8
    single = batches(data_dir, 3, seed=4, augment_config=on)
    multi = batches(data_dir, 3, seed=4, augment_config=on, views=3)
    for (images, labels), (views, view_labels) in zip(single, multi):
        assert views.shape == (12, 3, 16, 8, 3)
        np.testing.assert_array_equal(view_labels, labels)
        np.testing.assert_array_equal(views[:, 0], images)
        for v in (1, 2):  # own crops and erasing: not a copy of view 0
            assert (views[:, v] != views[:, 0]).any(axis=(1, 2, 3)).mean() > 0.5


def test_views_are_augmentations_of_the_same_image(uneven):
    """Without augmentation the views are equal; erasing alone blanks a different rectangle of
    the same image in each view (the images are constant-colour)."""
    data_dir, _ = uneven
    (views, _), = batches(data_dir, 1, seed=1, views=2)
    np.testing.assert_array_equal(views[:, 0], views[:, 1])
    erase_all = augment.AugmentConfig(flip=False, pad=0, erasing_probability=1.0)
    (views, _), = batches(data_dir, 1, seed=1, augment_config=erase_all, views=2)
    fill = np.array([255.0 * m for m in augment.IMAGENET_MEAN]).astype(np.uint8)
    erased = np.all(views == fill, axis=-1)  # [B, V, H, W]
    assert erased.any(axis=(2, 3)).all()
    assert (erased[:, 0] != erased[:, 1]).any(axis=(1, 2)).mean() > 0.5
    kept = ~(erased[:, 0] | erased[:, 1])
    np.testing.assert_array_equal(views[:, 0][kept], views[:, 1][kept])


def test_views_need_one_view_per_generated_image(uneven):
    data_dir, _ = uneven
    with pytest.raises(ValueError, match="views=2"):
        pk.pk_dataset(str(data_dir), 4, 3, views=2, generated_dir=str(data_dir),
                      generated_per_batch=2)
    with pytest.raises(ValueError, match="views=0"):
        pk.pk_dataset(str(data_dir), 4, 3, views=0)


def test_steps_per_epoch():
    assert pk.steps_per_epoch(751, 32) == 23
    assert pk.steps_per_epoch(751, 16, num_replicas=2) == 23
    with pytest.raises(ValueError, match="cannot fill a batch"):
        pk.steps_per_epoch(10, 8, num_replicas=2)


REPLICA_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_reid.data import augment, pk
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    off = augment.AugmentConfig(flip=False, pad=0, erasing_probability=0.0)
    ds = pk.pk_dataset(sys.argv[1], num_identities=2, num_instances=3, height=16, width=8,
                       augment_config=off, num_replicas=strategy.num_replicas_in_sync)
    out = []
    for images, labels in strategy.experimental_distribute_dataset(ds.take(12)):
        out.append([l.numpy().tolist() for l in strategy.experimental_local_results(labels)])
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "batches": out}))
""")


def test_each_replica_gets_whole_identities(uneven):
    data_dir, _ = uneven
    result = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, str(data_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert len(report["batches"]) == 12
    for per_replica in report["batches"]:
        assert len(per_replica) == 2
        for labels in per_replica:
            blocks = np.array(labels).reshape(2, 3)  # P = 2 identities, K = 3 each
            assert (blocks == blocks[:, :1]).all() and blocks[0, 0] != blocks[1, 0]
        assert set(per_replica[0]).isdisjoint(per_replica[1])


def test_a_global_seed_of_zero_does_not_break_the_pipeline(uneven):
    """tf.random.set_seed(0) (which keras.utils.set_random_seed(0) calls) once made the tensor
    seeds of Dataset.shuffle compare a symbolic tensor to 0 as a Python bool."""
    data_dir, manifest = uneven
    tf.random.set_seed(0)
    try:
        (images, labels), = batches(data_dir, 1)
    finally:
        tf.random.set_seed(None)
    check_pk(images, labels, manifest["label_map"], {pid: 1 + pid % 7 for pid in range(1, 25)},
             P=4, K=3)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """Joint training: dataset A with train pids 1..6 (3 images each), B with pids 11..14."""
    root = tmp_path_factory.mktemp("joint")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = write_dataset(root / "a", {pid: 3 for pid in range(1, 7)}, records_per_shard=4)
    b = write_dataset(root / "b", {pid: 3 for pid in range(11, 15)}, records_per_shard=4)
    return str(root / "a" / "out"), str(root / "b" / "out"), a, b


def identities_of(images: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[int, int]]:
    """(label, pid read from the image colour: red = pid * 8) of each K-group of a batch."""
    groups = []
    for start in range(0, len(labels), k):
        assert len(set(labels[start:start + k])) == 1  # K images of one identity
        pids = {int(round(images[i, 0, 0, 0] / 8)) for i in range(start, start + k)}
        assert len(pids) == 1
        groups.append((int(labels[start]), pids.pop()))
    return groups


def test_joint_labels_are_offset_per_dataset_and_recorded(two_datasets):
    a_dir, b_dir, a, b = two_datasets
    sets = pk.training_sets([a_dir, b_dir])
    # A has 6 training identities: its labels are 0..5, B's 4 follow as 6..9.
    assert [(s.label_offset, s.identities) for s in sets] == [(0, 6), (6, 4)]
    assert pk.num_classes(sets) == 10
    assert pk.pass_identities(sets) == 10
    assert pk.pass_identities(sets, "equal") == 8  # 4 from each
    assert [(m["label_offset"], m["identities"]) for m in pk.label_map(sets)] == [(0, 6), (6, 4)]
    with pytest.raises(Exception, match="given twice"):
        pk.training_sets([a_dir, b_dir, a_dir + "/"])

    # One pass, P = 2, K = 3: every identity of both datasets once, whole identities, and each
    # label is its dataset's label of the pid drawn in the image, plus the dataset's offset.
    expected = {label: pid for pid, label in
                ((int(p), int(l)) for p, l in a["label_map"].items())}
    expected.update({label + 6: pid for pid, label in
                     ((int(p), int(l)) for p, l in b["label_map"].items())})
    seen = []
    for images, labels in batches([a_dir, b_dir], 5, num_identities=2):
        seen += identities_of(images, labels, 3)
    assert sorted(seen) == sorted(expected.items())


def test_joint_equal_sampling_takes_as_many_identities_from_each(two_datasets):
    a_dir, b_dir, _, _ = two_datasets
    passes = []
    for epoch in range(2):
        seen = []
        for images, labels in batches([a_dir, b_dir], 4, num_identities=2, start_epoch=epoch,
                                      sampling="equal"):
            seen += [label for label, _ in identities_of(images, labels, 3)]
        assert len(set(seen)) == 8
        assert sum(label < 6 for label in seen) == 4 and sum(label >= 6 for label in seen) == 4
        passes.append(seen)
    assert passes[0] != passes[1]  # another order (and subset of A) every pass


GAN_RED = 250  # no pid of these tests has red pid * 8 == 250


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return write_generated(tmp_path_factory.mktemp("gan"), 20, red=GAN_RED)


def test_generated_images_follow_each_replicas_pk_block(uneven, generated):
    data_dir, manifest = uneven
    counts = {pid: 1 + pid % 7 for pid in range(1, 25)}
    P, K, N, R = 4, 3, 2, 2
    steps = pk.steps_per_epoch(24, P, R)  # 3
    got = batches(data_dir, 2 * steps, num_replicas=R, generated_dir=generated,
                  generated_per_batch=N, num_identities=P)
    for images, labels in got:
        assert images.shape == (R * (P * K + N), 16, 8, 3)
        for replica in range(R):
            rows = slice(replica * (P * K + N), (replica + 1) * (P * K + N))
            real_images, real_labels = images[rows][:P * K], labels[rows][:P * K]
            check_pk(real_images, real_labels, manifest["label_map"], counts, P, K)
            assert (labels[rows][P * K:] == -1).all()
            assert (images[rows][P * K:][..., 0] == GAN_RED).all()
    for epoch in range(2):  # a pass takes 3 x 4 = 12 of the 20 generated images, none twice
        seen = [int(round(im[0, 0, 1] / 10)) for images, labels in got[epoch * steps:][:steps]
                for im, label in zip(images, labels) if label == -1]
        assert len(seen) == 12 and len(set(seen)) == 12 and set(seen) <= set(range(20))


def test_generated_images_are_cycled_when_a_pass_needs_more(uneven, tmp_path):
    data_dir, _ = uneven
    few = write_generated(tmp_path, 5, red=GAN_RED)
    got = batches(data_dir, 6, generated_dir=few, generated_per_batch=3)  # 18 drawn of 5
    seen = [int(round(im[0, 0, 1] / 10)) for images, labels in got
            for im, label in zip(images, labels) if label == -1]
    assert len(seen) == 18 and set(seen) == set(range(5))
    for start in range(0, 15, 5):  # each cycle is the pass's one order
        assert seen[start:start + 5] == seen[:5]


def test_generated_batches_are_seeded_and_resume(uneven, generated):
    data_dir, _ = uneven
    steps = pk.steps_per_epoch(24, 4)
    extra = {"generated_dir": generated, "generated_per_batch": 2, "augment_config": ALL_ON}
    whole = batches(data_dir, 3 * steps, seed=3, **extra)
    again = batches(data_dir, 3 * steps, seed=3, num_parallel_calls=1, **extra)
    resumed = batches(data_dir, steps, seed=3, start_epoch=2, **extra)
    for (ia, la), (ib, lb) in zip(whole, again):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia, ib)
    for (ia, la), (ib, lb) in zip(whole[2 * steps:], resumed):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia, ib)
    plain = batches(data_dir, 2 * steps, seed=3, generated_dir=generated, generated_per_batch=2)
    orders = [[int(round(im[0, 0, 1] / 10)) for im in images[12:]] for images, _ in plain]
    assert orders[:steps] != orders[steps:], "a new order every pass"


def test_a_folder_without_a_generated_split_is_refused(uneven):
    data_dir, _ = uneven
    with pytest.raises(DatasetError, match="no 'generated' split"):
        pk.pk_dataset(str(data_dir), 4, 3, height=16, width=8, generated_dir=str(data_dir),
                      generated_per_batch=2)
