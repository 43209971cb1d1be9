"""ReID image preprocessing and training augmentation as pure, seeded TensorFlow ops.

Every op keeps static output shapes, runs eagerly and inside `tf.data.Dataset.map`, and draws
its randomness only from stateless ops fed by a `seed` of shape [2] (int32 or int64), so the
same seed gives the same image whatever the parallelism. Augmentation works on pixels in
[0, 255]: per image, `augment` flips and pad-crops; per batch, `random_erasing_batch` erases;
`normalize` comes last (in the model, by default).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FILLS = ("mean", "random")


def decode_and_resize(encoded: tf.Tensor, height: int, width: int,
                      dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes (by content) and resizes bilinearly.

    Bilinear interpolation (without antialiasing) is a convex combination of input pixels, so
    the result stays inside [0, 255] without clipping.

    Args:
      encoded: scalar tf.string of encoded image bytes; a GIF gives its first frame.
      height: output height in pixels.
      width: output width in pixels.
      dtype: tf.float32, or tf.uint8 (rounded to the nearest level).

    Returns:
      [height, width, 3] of `dtype`, in [0, 255].
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(resize(image, height, width, dtype), [height, width, 3])


def resize(pixels: tf.Tensor, height: int, width: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Bilinear resize of decoded pixels, the one every input path (training, evaluation,
    the exported model) shares.

    Args:
      pixels: [..., h, w, 3] (one image or a batch) of any real dtype, in [0, 255].
      height, width: output size.
      dtype: tf.float32, or tf.uint8 (rounded to the nearest level).

    Returns:
      [..., height, width, 3] of `dtype`.
    """
    image = tf.image.resize(pixels, [height, width], method="bilinear")
    if dtype == tf.uint8:
        image = tf.cast(tf.round(image), tf.uint8)
    return image


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Maps [0, 255] RGB pixels to ImageNet-standardised values: (image/255 - mean) / std.

    Args:
      image: [..., 3] float32 in [0, 255].

    Returns:
      [..., 3] float32, same shape.
    """
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (tf.cast(image, tf.float32) / 255.0 - mean) / std


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips left-right with probability 1/2.

    Args:
      image: [H, W, C].
      seed: [2] int32/int64 stateless seed.

    Returns:
      [H, W, C], either `image` or `image[:, ::-1]`.
    """
    return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image: tf.Tensor, seed: tf.Tensor, pad: int = 10) -> tf.Tensor:
    """Zero-pads `pad` pixels on every side, then crops a random window of the input's size.

    Args:
      image: [H, W, C].
      seed: [2] int32/int64 stateless seed.
      pad: border width; the window's offset is uniform in [0, 2*pad] along each axis.

    Returns:
      [H, W, C], same dtype: `padded[dy:dy+H, dx:dx+W]`.
    """
    if pad == 0:
        return image
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed)
    return tf.ensure_shape(cropped, image.shape)


def erasing_boxes(shape_hw: tuple[int, int], seed: tf.Tensor, num: int, probability: float = 0.5,
                  area: tuple[float, float] = (0.02, 0.4), aspect: tuple[float, float] = (0.3, 3.3),
                  attempts: int = 10) -> tuple[tf.Tensor, ...]:
    """`num` rectangles random erasing blanks out, if any (Zhong et al. 2017, arXiv:1708.04896).

    As in the paper's reference code: the target area is a uniform fraction in `area` of the
    image area, the aspect ratio h/w is uniform in `aspect`, h = round(sqrt(area * aspect)) and
    w = round(sqrt(area / aspect)). The `attempts` candidates are drawn at once and the first
    with 1 <= h <= H and 1 <= w <= W is used; its top-left corner is uniform among the
    (H - h + 1) * (W - w + 1) placements inside the image. All `num` boxes come from one draw
    of [num, 2 * attempts + 3] uniforms: a few ops per batch rather than per image (per image,
    the scalar ops would cost more than the erasing itself; see BUILD.md).

    Args:
      shape_hw: (H, W) of the images.
      seed: [2] int32/int64 stateless seed.
      num: number of boxes (images).
      probability: chance of trying to erase at all.
      area: (min, max) fraction of the image area.
      aspect: (min, max) of h / w.
      attempts: candidates drawn; if none fits, nothing is erased.

    Returns:
      (apply [num] bool, top, left, h, w: [num] int32). Where `apply` is False the box is
      (0, 0, 0, 0), so the mask it describes is always the erased region.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    height, width = shape_hw
    u = tf.random.stateless_uniform([num, 2 * attempts + 3], seed)
    coin, area_u, aspect_u, position = tf.split(u, [1, attempts, attempts, 2], axis=1)
    image_area = tf.cast(height * width, tf.float32)
    target = image_area * (area[0] + (area[1] - area[0]) * area_u)
    ratio = aspect[0] + (aspect[1] - aspect[0]) * aspect_u
    hs = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    ws = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (hs >= 1) & (hs <= height) & (ws >= 1) & (ws <= width)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    apply = (coin[:, 0] < probability) & tf.reduce_any(fits, axis=1)
    h = tf.where(apply, tf.gather(hs, first, batch_dims=1), 0)
    w = tf.where(apply, tf.gather(ws, first, batch_dims=1), 0)
    # floor(u * n) is uniform over 0..n-1; the min guards against u * n rounding up to n.
    slots = tf.stack([height - h + 1, width - w + 1], axis=1)
    corner = tf.minimum(tf.cast(tf.floor(position * tf.cast(slots, tf.float32)), tf.int32),
                        slots - 1)
    top = tf.where(apply, corner[:, 0], 0)
    left = tf.where(apply, corner[:, 1], 0)
    return apply, top, left, h, w


def erase(images: tf.Tensor, top: tf.Tensor, left: tf.Tensor, h: tf.Tensor, w: tf.Tensor,
          values: tf.Tensor) -> tf.Tensor:
    """Writes `values` into each image's rectangle, via a coordinate-grid mask (static shapes).

    Args:
      images: [B, H, W, C].
      top, left, h, w: [B] int32 boxes (h = 0 erases nothing).
      values: broadcastable to [B, H, W, C], e.g. [C] or [B, H, W, C].

    Returns:
      [B, H, W, C], dtype of `images`.
    """
    rows = tf.range(tf.shape(images)[1])[None, :, None]
    cols = tf.range(tf.shape(images)[2])[None, None, :]
    top, left, h, w = (v[:, None, None] for v in (top, left, h, w))
    mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return tf.where(mask[..., None], tf.cast(values, images.dtype), images)


# One fused XLA loop over the batch instead of separate mask and select passes (see BUILD.md),
# same output; the boxes are runtime inputs, so it compiles once per batch shape.
_erase_compiled = tf.function(erase, jit_compile=True)


def _fill_values(fill: str, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
    if fill == "mean":
        return tf.constant([255.0 * m for m in IMAGENET_MEAN], tf.float32)
    fill_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.random.stateless_uniform(shape, fill_seed, 0.0, 255.0)


def random_erasing_batch(images: tf.Tensor, seed: tf.Tensor, probability: float = 0.5,
                         area: tuple[float, float] = (0.02, 0.4),
                         aspect: tuple[float, float] = (0.3, 3.3), fill: str = "mean",
                         attempts: int = 10) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017) of a batch: one random rectangle per image, or none.

    Args:
      images: [B, H, W, 3] with static B, H, W; uint8 or float32 in [0, 255].
      seed: [2] int32/int64 stateless seed for the whole batch.
      probability, area, aspect, attempts: as in `erasing_boxes`.
      fill: "mean" writes the ImageNet mean pixel (255 * IMAGENET_MEAN); "random" writes
        per-pixel uniform values in [0, 255].

    Returns:
      [B, H, W, 3], same dtype.
    """
    values = _fill_values(fill, tf.shape(images), seed)
    num, height, width = images.shape[:3]
    _, top, left, h, w = erasing_boxes((height, width), seed, num, probability, area, aspect,
                                       attempts)
    return _erase_compiled(images, top, left, h, w, values)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations run: `augment` per image, the rest per batch (`pk`).

    Attributes:
      flip: random horizontal flip.
      pad: zero-pad border for the random crop; 0 switches it off.
      erasing_probability: random erasing probability; 0 switches it off.
      erasing_area: (min, max) erased fraction of the image area.
      erasing_aspect: (min, max) aspect ratio h/w of the erased rectangle.
      erasing_fill: "mean" or "random", as in `random_erasing_batch`.
      normalize: finish with ImageNet standardisation in the input pipeline; by default the
        model does it, on 4x fewer bytes (uint8 batches).
    """

    flip: bool = True
    pad: int = 10
    erasing_probability: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_aspect: tuple[float, float] = (0.3, 3.3)
    erasing_fill: str = "mean"
    normalize: bool = False


def augment(image: tf.Tensor, seed: tf.Tensor,
            config: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Per-image training augmentation: flip -> pad + random crop.

    Random erasing and normalisation run on whole batches (`random_erasing_batch`,
    `normalize`), where one op serves every image. Each step gets its own sub-seed of `seed`,
    so switching one off leaves the other's draws unchanged.

    Args:
      image: [H, W, 3] uint8 or float32 in [0, 255], static shape.
      seed: [2] int32/int64 stateless seed.
      config: which steps run (its flip and pad).

    Returns:
      [H, W, 3], same dtype.
    """
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if config.flip:
        image = random_flip(image, flip_seed)
    if config.pad:
        image = pad_and_random_crop(image, crop_seed, config.pad)
    return image


def view_seed(seed: tf.Tensor, view: int) -> tf.Tensor:
    """[2] seed of augmented view `view` of an image or batch seeded by `seed` ([2]): view 0
    takes `seed` itself, so one view is exactly the single-view augmentation."""
    return seed if view == 0 else tf.random.experimental.stateless_fold_in(seed, view)


def augment_views(image: tf.Tensor, seed: tf.Tensor, views: int,
                  config: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """`views` independently augmented copies of one image (per-image steps of `augment`).

    Args:
      image: [H, W, 3] uint8 or float32 in [0, 255], static shape.
      seed: [2] int32/int64 stateless seed; view v uses `view_seed(seed, v)`.
      views: V >= 1.
      config: which steps run.

    Returns:
      [V, H, W, 3], same dtype.
    """
    return tf.stack([augment(image, view_seed(seed, v), config) for v in range(views)])


def erase_views(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """`random_erasing_batch` of each view of a multi-view batch, view v seeded by
    `view_seed(seed, v)` (no-op when the config's erasing probability is 0).

    Args:
      images: [B, V, H, W, 3] with static B, V, H, W; uint8 or float32 in [0, 255].
      seed: [2] int32/int64 stateless seed for the whole batch.
      config: the erasing settings.

    Returns:
      [B, V, H, W, 3], same dtype.
    """
    if config.erasing_probability <= 0:
        return images
    return tf.stack([random_erasing_batch(images[:, v], view_seed(seed, v),
                                          config.erasing_probability, config.erasing_area,
                                          config.erasing_aspect, config.erasing_fill)
                     for v in range(images.shape[1])], axis=1)
