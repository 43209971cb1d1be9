"""Image bytes: format by content (not by file extension) and a decode check."""

from __future__ import annotations

import re
from dataclasses import dataclass

import tensorflow as tf

from tfrecords_builder.records import DatasetError

_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    height: int
    width: int


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png', 'gif', 'bmp' from the leading bytes, or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def op_error(error: tf.errors.OpError) -> str:
    """The gist of a TensorFlow error message, without function-node and op decorations."""
    text = (error.message or type(error).__name__).strip().splitlines()[0]
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text)


def probe(data: bytes, name: str) -> ImageInfo:
    """Decodes `data` fully with TensorFlow's decoder (the one training uses) and reports it.

    Raises:
      DatasetError: naming `name`, when the bytes are not a decodable image.
    """
    image_format = sniff_format(data)
    if image_format is None:
        raise DatasetError(f"{name}: image does not decode (not JPEG, PNG, GIF or BMP data)")
    try:
        shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
    except tf.errors.OpError as e:
        raise DatasetError(f"{name}: image does not decode ({image_format}: {op_error(e)})") from None
    return ImageInfo(format=image_format, height=int(shape[0]), width=int(shape[1]))
