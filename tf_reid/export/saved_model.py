"""A trained student as a SavedModel in TensorFlow Serving's layout, preprocessing inside.

EXPORT_DIR/<model_name>/<version>/
  saved_model.pb, variables/           signatures below
  assets.extra/tf_serving_warmup_requests   PredictionLog records a server replays at load
  assets.extra/model_card.json         input size, embedding size, backbone, data, metrics

Signatures (a client sends raw images; resizing is the evaluation input's, see
`tf_reid.data.augment.resize`, so served embeddings equal evaluated ones):
  serving_default: images tf.string [N] (JPEG/PNG/BMP/GIF bytes, any size)
                   -> embeddings float32 [N, D], L2-normalised global features (by
                   default the pre-BN feature averaged with its mirror's, as evaluated)
  embed_pixels:    pixels uint8 [N, H, W, 3] (any H, W) -> embeddings [N, D]
  embed_local:     images tf.string [N] -> embeddings [N, D], local float32 [N, h, c]
                   (stripe features for global + local matching; only for a model with a
                   local branch, not a baseline)
Bytes that are not an image fail the call with InvalidArgument from the decoder; an empty
batch returns [0, D]. An image whose header declares more than `max_pixels` (height x width,
default MAX_PIXELS = 4096 x 4096, recorded in the model card) fails its call with InvalidArgument
before it is decoded, so one huge (or decompression-bomb) image cannot take the server's memory;
the server keeps serving. An animated GIF is decoded whole (TensorFlow has no first-frame
decoder): the cap bounds each frame, not their number.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import keras
import tensorflow as tf

from tf_reid.data import augment
from tf_reid.evaluation import extract
from tf_reid.evaluation.feature_choice import DEFAULT_FEATURE, DEFAULT_FLIP
from tf_reid.models.aligned_reid import AlignedReID
from tfrecords_builder import atomic

SIGNATURES = ("serving_default", "embed_pixels", "embed_local")
IMAGES_INPUT = "images"
MAX_PIXELS = 4096 * 4096  # the default cap on a served image's decoded size
PIXELS_INPUT = "pixels"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CARD = "model_card.json"


class ExportError(ValueError):
    """An export that cannot be written as asked (existing version, bad name)."""


def _unsigned(data: tf.Tensor, start: int, length: int, little_endian: bool) -> tf.Tensor:
    """The unsigned integer (int64 scalar) in bytes [start, start + length) of a tf.string."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    shifts = 8 * tf.range(length, dtype=tf.int64)
    if not little_endian:
        shifts = tf.reverse(shifts, [0])
    return tf.reduce_sum(tf.bitwise.left_shift(raw, shifts))


def header_size(data: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 [2] read from an encoded image's header, without decoding it.

    JPEG: its SOF marker; PNG: IHDR; GIF: the logical screen; BMP: the info header (a top-down
    BMP stores a negative height). Data too short or of another format gives [0, 0] (the
    decoder then rejects it).
    """
    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        return tf.stack([_unsigned(data, 20, 4, False), _unsigned(data, 16, 4, False)])

    def gif():
        return tf.stack([_unsigned(data, 8, 2, True), _unsigned(data, 6, 2, True)])

    def bmp():
        height = _unsigned(data, 22, 4, True)
        return tf.stack([tf.where(height >= 2**31, 2**32 - height, height),
                         _unsigned(data, 18, 4, True)])

    def starts_with(magic: bytes) -> tf.Tensor:
        return tf.logical_and(tf.strings.length(data) >= 26,
                              tf.equal(tf.strings.substr(data, 0, len(magic)), magic))

    return tf.case([(starts_with(b"\xff\xd8\xff"), jpeg), (starts_with(b"\x89PNG\r\n\x1a\n"), png),
                    (starts_with(b"GIF8"), gif), (starts_with(b"BM"), bmp)],
                   default=lambda: tf.zeros([2], tf.int64), exclusive=True)


class EmbeddingModule(tf.Module):
    """The model's inference path with its preprocessing, as `tf.function`s with fixed inputs."""

    def __init__(self, model: AlignedReID, max_pixels: int = MAX_PIXELS,
                 feature: str = DEFAULT_FEATURE, flip: bool = DEFAULT_FLIP):
        super().__init__(name="reid_embedding")
        self.model = model
        self.max_pixels = max_pixels
        self.feature, self.flip = feature, flip
        self.height, self.width = model.image_shape[:2]
        probe = self._run(tf.zeros((1, self.height, self.width, 3), tf.uint8))
        self.empty_shapes = {name: [0, *value.shape[1:]] for name, value in probe.items()}

    def _run(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        out = extract.embed(self.model, pixels, self.feature, self.flip)
        embeddings = tf.math.l2_normalize(tf.cast(out["global"], tf.float32), axis=-1)
        if "local" not in out:
            return {"embeddings": embeddings}
        return {"embeddings": embeddings, "local": tf.cast(out["local"], tf.float32)}

    def _outputs(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 [N, height, width, 3] -> embeddings [N, D] (unit norm), local [N, h, c].

        An empty batch never reaches the model: TF 2.21's CPU convolution returns its input
        unchanged for an empty batch ([0, H, W, 3] where [0, h, w, C] is due), and the next
        layer then fails on the shapes.
        """
        return tf.cond(tf.shape(pixels)[0] > 0, lambda: self._run(pixels),
                       lambda: {name: tf.zeros(shape, tf.float32)
                                for name, shape in self.empty_shapes.items()})

    def _decode_one(self, encoded: tf.Tensor) -> tf.Tensor:
        """[height, width, 3] uint8 of one encoded image, refused unless within `max_pixels`."""
        size = header_size(encoded)
        check = tf.debugging.assert_less_equal(
            size[0] * size[1], tf.constant(self.max_pixels, tf.int64),
            message=f"image larger than the served maximum of {self.max_pixels} pixels")
        with tf.control_dependencies([check]):  # decode only after the check passed
            return augment.decode_and_resize(tf.identity(encoded), self.height, self.width,
                                             tf.uint8)

    def _decode(self, images: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(self._decode_one, images, fn_output_signature=tf.TensorSpec(
            [self.height, self.width, 3], tf.uint8))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"embeddings": self._outputs(self._decode(images))["embeddings"]}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name=PIXELS_INPUT)])
    def embed_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        resized = augment.resize(pixels, self.height, self.width, tf.uint8)
        return {"embeddings": self._outputs(resized)["embeddings"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def embed_local(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(self._decode(images))

    def signatures(self) -> dict[str, Any]:
        signatures = {"serving_default": self.serve_images, "embed_pixels": self.embed_pixels,
                      "embed_local": self.embed_local}
        if not self.model.local_branch:
            del signatures["embed_local"]
        return signatures


def next_version(model_dir: str) -> int:
    """1 + the largest numeric version folder under `model_dir` (1 when there is none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def predict_request(images: Sequence[bytes], model_name: str,
                    signature_name: str = "serving_default"):
    """A tensorflow_serving PredictRequest carrying encoded images as the `images` input."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs[IMAGES_INPUT].CopyFrom(
        tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
    return request


def write_warmup(path: str, images: Sequence[bytes], model_name: str,
                 signatures: Sequence[str] = ("serving_default", "embed_local")) -> None:
    """TF Serving's warm-up file: one PredictionLog per signature taking encoded images."""
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(path) as f:
        for signature in signatures:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=predict_request(images, model_name, signature)))
            f.write(log.SerializeToString())


def export(model: AlignedReID, export_dir: str, model_name: str, version: int | None = None,
           warmup_images: Sequence[bytes] = (), model_card: dict[str, Any] | None = None,
           max_pixels: int = MAX_PIXELS, feature: str = DEFAULT_FEATURE,
           flip: bool = DEFAULT_FLIP) -> str:
    """Writes EXPORT_DIR/model_name/version atomically and returns its path.

    Args:
      model: the student to serve (its input_shape fixes the resize).
      export_dir: the server's model base path.
      model_name: the served model's name (a folder name).
      version: the version number; None = next free.
      warmup_images: encoded images for the warm-up requests (none: no warm-up file).
      model_card: extra facts for model_card.json (training data, metrics, ...).
      max_pixels: the largest image (height x width, from its header) the signatures taking
        encoded images accept.
      feature, flip: the embedding, as `tf_reid.evaluate` evaluates it (`extract.embed`).

    Raises:
      ExportError: the version exists, or the name is not a plain folder name.
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ExportError(f"{model_name!r}: not a usable model name")
    model_dir = os.path.join(export_dir, model_name)
    version = next_version(model_dir) if version is None else int(version)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final}: version {version} exists; choose another --version")
    # TF Serving only loads numeric folders, so the partial one is never served; a version is
    # never replaced (a server may be serving it).
    hidden = os.path.join(model_dir, f".{version}.partial-{os.getpid()}")
    with atomic.folder(final, replace=False, temporary=hidden) as partial:
        module = EmbeddingModule(model, max_pixels, feature, flip)
        signatures = module.signatures()
        tf.saved_model.save(module, partial, signatures=signatures)
        extra = os.path.join(partial, "assets.extra")
        os.makedirs(extra)
        if warmup_images:
            write_warmup(os.path.join(extra, WARMUP_FILE), warmup_images, model_name,
                         [name for name in signatures if name != "embed_pixels"])
        card = {"model_name": model_name, "version": version,
                "input": {"height": module.height, "width": module.width, "channels": 3,
                          "formats": "JPEG, PNG, BMP, GIF (first frame)",
                          "max_pixels": max_pixels},
                "embedding_dim": int(module.serve_images.get_concrete_function()
                                     .structured_outputs["embeddings"].shape[-1]),
                "feature": feature, "flip": flip, "backbone": model.backbone_name,
                "signatures": list(signatures),
                "local_stripes": [int(d) for d in model.backbone.output.shape[1:2]]
                + [model.local_channels] if model.local_branch else None,
                "keras": keras.__version__, "tensorflow": tf.__version__,
                **(model_card or {})}
        from tf_reid.training import workdir as workdir_lib

        workdir_lib.write_json(os.path.join(extra, MODEL_CARD), card)
    return final
