"""Preprocessing and augmentation ops: hand-worked values, NumPy twins, statistics over seeds,
and the same numbers eagerly and inside `Dataset.map`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import image_bytes
from tf_reid.data import augment as aug

MEAN_PIXEL = np.float32(255.0) * np.array(aug.IMAGENET_MEAN, np.float32)
ALL_OFF = aug.AugmentConfig(flip=False, pad=0)
SEED = tf.constant([5, 9], tf.int64)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def seeds(n: int, dtype=np.int64) -> np.ndarray:
    """[n, 2] distinct stateless seeds."""
    return np.stack([np.arange(n), np.full(n, 12345)], axis=1).astype(dtype)


def random_image(height: int, width: int, seed: int = 0, low: int = 0) -> np.ndarray:
    """[height, width, 3] float32 with integer values in [low, 255]."""
    rng = np.random.default_rng(seed)
    return rng.integers(low, 256, (height, width, 3)).astype(np.float32)


def map_over(fn, *tensors) -> tuple[tf.data.DatasetSpec, list]:
    """Runs `fn` over the slices of `tensors` inside a parallel `Dataset.map`."""
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    ds = ds.map(fn, num_parallel_calls=2, deterministic=True)
    return ds.element_spec, [tf.nest.map_structure(np.asarray, x) for x in ds.as_numpy_iterator()]


def map_batched(fn, *tensors):
    """`fn` over every slice inside `Dataset.map`, results stacked (one fetch, fast)."""
    n = len(tensors[0])
    ds = tf.data.Dataset.from_tensor_slices(tensors).map(fn, num_parallel_calls=2).batch(n)
    return next(iter(ds.as_numpy_iterator()))


# --- decode_and_resize / normalize -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
@pytest.mark.parametrize("size", [(16, 8), (50, 30)])
def test_decode_and_resize_shape_dtype_range(fmt, size):
    encoded = image_bytes(height=37, width=23, fmt=fmt, seed=3) if fmt != "GIF" else \
        encode(random_image(37, 23, seed=3), "GIF")
    out = aug.decode_and_resize(tf.constant(encoded), *size)
    assert out.shape == (*size, 3) and out.dtype == tf.float32
    assert 0.0 <= out.numpy().min() and out.numpy().max() <= 255.0


def test_decode_and_resize_hand_worked_bilinear():
    # 1x2 black|white PNG to 1x4: half-pixel sample points -0.25, 0.25, 0.75, 1.25 (edges clamp).
    encoded = encode(np.array([[[0, 0, 0], [255, 255, 255]]]), "PNG")
    out = aug.decode_and_resize(tf.constant(encoded), 1, 4).numpy()
    np.testing.assert_allclose(out[0, :, 0], [0.0, 63.75, 191.25, 255.0], atol=1e-4)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_constant_colour_survives_resize_exactly():
    colour = np.array([200, 17, 93], np.uint8)
    encoded = encode(np.broadcast_to(colour, (30, 11, 3)), "PNG")
    for size in [(16, 8), (64, 40)]:
        out = aug.decode_and_resize(tf.constant(encoded), *size).numpy()
        np.testing.assert_array_equal(out, np.broadcast_to(colour.astype(np.float32), (*size, 3)))


def test_normalize_hand_worked():
    pixels = tf.constant([MEAN_PIXEL, [255.0] * 3, [0.0] * 3])
    out = aug.normalize(pixels).numpy()
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.0], atol=1e-6)
    # (1 - 0.485)/0.229, (1 - 0.456)/0.224, (1 - 0.406)/0.225
    np.testing.assert_allclose(out[1], [2.2489083, 2.4285714, 2.64], rtol=1e-6)
    # -0.485/0.229, -0.456/0.224, -0.406/0.225
    np.testing.assert_allclose(out[2], [-2.1179039, -2.0357143, -1.8044444], rtol=1e-6)


# --- random_flip -------------------------------------------------------------------------------


def test_flip_is_identity_or_mirror_about_half_the_time():
    image = random_image(6, 5)
    n = 400
    out = map_batched(lambda s: aug.random_flip(tf.constant(image), s), seeds(n))
    same = np.all(out == image, axis=(1, 2, 3))
    mirrored = np.all(out == image[:, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)
    assert abs(mirrored.mean() - 0.5) <= 0.08


# --- pad_and_random_crop -----------------------------------------------------------------------


def crop_offsets(out: np.ndarray, image: np.ndarray, pad: int) -> list[tuple[int, int]]:
    """Every (dy, dx) with out == zero-padded image[dy:dy+H, dx:dx+W] (the slow twin)."""
    h, w, _ = image.shape
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    return [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
            if np.array_equal(out, padded[dy:dy + h, dx:dx + w])]


def test_pad_and_crop_is_a_window_of_the_padded_image():
    pad = 3
    image = random_image(12, 9, low=1)  # no zeros, so the padding is recognisable
    out = map_batched(lambda s: aug.pad_and_random_crop(tf.constant(image), s, pad), seeds(200))
    assert out.shape == (200, 12, 9, 3)
    offsets = [crop_offsets(o, image, pad) for o in out]
    assert all(len(found) == 1 for found in offsets)
    dys, dxs = zip(*(found[0] for found in offsets))
    assert set(dys) == set(dxs) == set(range(2 * pad + 1))


def test_pad_zero_is_identity():
    image = random_image(6, 4)
    out = aug.pad_and_random_crop(tf.constant(image), tf.constant([1, 2]), pad=0)
    np.testing.assert_array_equal(out, image)


# --- random erasing ----------------------------------------------------------------------------


def boxes(shape_hw, n, **kwargs) -> dict[str, np.ndarray]:
    """`n` boxes of one `erasing_boxes` draw (seed SEED), as NumPy."""
    apply, top, left, h, w = (t.numpy() for t in aug.erasing_boxes(shape_hw, SEED, n, **kwargs))
    return dict(apply=apply, top=top, left=left, h=h, w=w)


def copies(image: np.ndarray, n: int) -> tf.Tensor:
    """[n, H, W, 3]: `n` copies of one image, a batch to erase."""
    return tf.constant(np.broadcast_to(image, (n, *image.shape)))


def test_erasing_box_statistics():
    height, width = 256, 128
    b = boxes((height, width), 2000, probability=0.5)
    on = b["apply"]
    assert abs(on.mean() - 0.5) <= 0.04
    for key in ("top", "left", "h", "w"):
        assert np.all(b[key][~on] == 0)
    top, left, h, w = (b[k][on].astype(np.float64) for k in ("top", "left", "h", "w"))
    assert np.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1))
    assert np.all((top + h <= height) & (left + w <= width))
    # h and w are rounded to integers: widen the bounds by half a pixel each way.
    image_area = height * width
    assert np.all((h + 0.5) * (w + 0.5) >= 0.02 * image_area)
    assert np.all((h - 0.5) * (w - 0.5) <= 0.4 * image_area)
    assert np.all((h + 0.5) / (w - 0.5) >= 0.3) and np.all((h - 0.5) / (w + 0.5) <= 3.3)
    # The draws fill the ranges, and the corner is uniform over the valid placements.
    fraction = h * w / image_area
    assert fraction.min() < 0.04 and fraction.max() > 0.35
    assert (h / w).min() < 0.5 and (h / w).max() > 3.0
    for pos, size, extent in ((top, h, height), (left, w, width)):
        relative = (pos + 0.5) / (extent - size + 1)
        assert abs(relative.mean() - 0.5) < 0.03 and relative.min() < 0.05 and relative.max() > 0.95


def test_erasing_probability_one_erases_whenever_a_candidate_fits():
    # 256x128, one candidate: it misses only when w = round(sqrt(A/r)) > 128, i.e. f/r > c with
    # c = 128.5^2/32768, f ~ U[0.02, 0.4], r ~ U[0.3, 3.3] (h always fits). That probability is
    # [f^2/(2c) - 0.3 f] from 0.3c to 0.4, over 0.38 * 3: 0.0539, so 94.6% erase.
    assert abs(boxes((256, 128), 2000, probability=1.0, attempts=1)["apply"].mean() - 0.9461) < 0.02
    # Ten candidates: all ten miss with probability 0.0539^10, i.e. never.
    assert boxes((256, 128), 2000, probability=1.0)["apply"].all()


def test_erasing_skips_when_no_candidate_fits():
    # 4x4, area 8..9.6 px, h/w >= 3: h = round(sqrt(area * aspect)) >= 5 > 4, so no candidate fits.
    image = random_image(4, 4)
    kwargs = dict(probability=1.0, area=(0.5, 0.6), aspect=(3.0, 3.3))
    assert not boxes((4, 4), 200, **kwargs)["apply"].any()
    out = aug.random_erasing_batch(copies(image, 200), SEED, **kwargs).numpy()
    assert np.all(out == image)


def test_erasing_probability_zero_never_erases():
    assert not boxes((256, 128), 500, probability=0.0)["apply"].any()
    image = random_image(32, 16)
    out = aug.random_erasing_batch(copies(image, 200), SEED, probability=0.0).numpy()
    assert np.all(out == image)


def erase_reference(image: np.ndarray, top: int, left: int, h: int, w: int, fill) -> np.ndarray:
    """The slow obvious twin: slice assignment."""
    out = image.copy()
    out[top:top + h, left:left + w] = fill
    return out


def test_random_erasing_mean_fill_matches_slicing_reference():
    image = random_image(32, 16)
    out = aug.random_erasing_batch(copies(image, 100), SEED).numpy()
    apply, top, left, h, w = boxes((32, 16), 100).values()
    assert 20 < apply.sum() < 80
    for i in range(100):
        expected = erase_reference(image, top[i], left[i], h[i], w[i], MEAN_PIXEL)
        np.testing.assert_array_equal(out[i], expected)
        assert apply[i] == (not np.array_equal(out[i], image))


def test_random_erasing_random_fill():
    image = random_image(32, 16)
    out = aug.random_erasing_batch(copies(image, 50), SEED, probability=1.0, fill="random").numpy()
    apply, top, left, h, w = boxes((32, 16), 50, probability=1.0).values()
    assert apply.all()
    for i in range(50):
        inside = np.zeros((32, 16), bool)
        inside[top[i]:top[i] + h[i], left[i]:left[i] + w[i]] = True
        np.testing.assert_array_equal(out[i][~inside], image[~inside])
        values = out[i][inside]
        assert values.min() >= 0.0 and values.max() <= 255.0
        assert len(np.unique(values)) > values.size // 2


def test_random_erasing_rejects_unknown_fill():
    with pytest.raises(ValueError, match="fill"):
        aug.random_erasing_batch(tf.zeros([2, 8, 4, 3]), tf.constant([0, 0]), fill="zero")


# --- augment -------------------------------------------------------------------------------------


def test_augment_is_deterministic_in_the_seed():
    image = tf.constant(random_image(32, 16))
    a = aug.augment(image, tf.constant([7, 8], tf.int64))
    b = aug.augment(image, tf.constant([7, 8], tf.int64))
    c = aug.augment(image, tf.constant([9, 8], tf.int64))
    assert a.shape == (32, 16, 3) and a.dtype == tf.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_with_everything_off_is_identity():
    image = random_image(32, 16)
    for seed in seeds(5):
        np.testing.assert_array_equal(aug.augment(tf.constant(image), seed, ALL_OFF), image)


def test_augment_steps_draw_independently():
    # The crop offset does not depend on whether the flip step ran before it.
    pad = 4
    image = random_image(16, 8, low=1)
    flip = aug.AugmentConfig(flip=True, pad=0)
    crop = aug.AugmentConfig(flip=False, pad=pad)
    both = aug.AugmentConfig(flip=True, pad=pad)
    for seed in seeds(10):
        flipped = aug.augment(tf.constant(image), seed, flip).numpy()
        cropped = aug.augment(tf.constant(image), seed, crop).numpy()
        flipped_cropped = aug.augment(tf.constant(image), seed, both).numpy()
        assert crop_offsets(flipped_cropped, flipped, pad) == crop_offsets(cropped, image, pad)


# --- eager == Dataset.map --------------------------------------------------------------------


IMAGE = random_image(24, 12, seed=5)
IMAGES = np.stack([random_image(24, 12, seed=s) for s in range(4)])
OPS = {
    "flip": lambda s: aug.random_flip(tf.constant(IMAGE), s),
    "pad_crop": lambda s: aug.pad_and_random_crop(tf.constant(IMAGE), s, 5),
    "erasing_mean": lambda s: aug.random_erasing_batch(tf.constant(IMAGES), s, probability=0.7),
    "erasing_random": lambda s: aug.random_erasing_batch(tf.constant(IMAGES), s, probability=0.7,
                                                         fill="random"),
    "erasing_boxes": lambda s: aug.erasing_boxes((24, 12), s, 4),
    "augment": lambda s: aug.augment(tf.constant(IMAGE), s),
}


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("name", sorted(OPS))
def test_eager_and_dataset_map_agree(name, dtype):
    op = OPS[name]
    seed_array = seeds(12, dtype)
    spec, in_graph = map_over(op, seed_array)
    assert all(s.shape.is_fully_defined() for s in tf.nest.flatten(spec))
    for seed, graph_result in zip(seed_array, in_graph):
        eager_result = op(tf.constant(seed))
        for e, g in zip(tf.nest.flatten(eager_result), tf.nest.flatten(graph_result)):
            np.testing.assert_array_equal(e, g)


def test_decoding_eager_and_dataset_map_agree():
    encoded = [image_bytes(height=37, width=23, fmt=fmt, seed=i)
               for i, fmt in enumerate(["PNG", "JPEG"] * 2)]

    def op(data):
        return aug.decode_and_resize(data, 16, 8)

    spec, in_graph = map_over(op, encoded)
    assert spec.shape == (16, 8, 3) and spec.shape.is_fully_defined()
    for data, graph_result in zip(encoded, in_graph):
        np.testing.assert_array_equal(op(tf.constant(data)), graph_result)


def test_random_erasing_batch_matches_its_boxes_eagerly_and_in_map():
    images = np.random.default_rng(3).integers(0, 256, (64, 32, 16, 3)).astype(np.uint8)
    out = aug.random_erasing_batch(tf.constant(images), SEED).numpy()
    apply, top, left, h, w = boxes((32, 16), 64).values()
    fill = np.array([255.0 * m for m in aug.IMAGENET_MEAN]).astype(np.uint8)  # cast truncates
    want = images.copy()
    for i in range(64):
        want[i, top[i]:top[i] + h[i], left[i]:left[i] + w[i]] = fill
    np.testing.assert_array_equal(out, want)
    assert 0.3 < apply.mean() < 0.7 and (h[~apply] == 0).all()
    ds = tf.data.Dataset.from_tensors((images, SEED)).map(
        lambda x, s: aug.random_erasing_batch(x, s), num_parallel_calls=2)
    assert ds.element_spec.shape.as_list() == [64, 32, 16, 3]
    np.testing.assert_array_equal(next(iter(ds)).numpy(), out)
