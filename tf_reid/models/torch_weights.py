"""PyTorch MobileNetV2 ImageNet weights in Keras, read without torch.

The weights in ../shared/weights are a legacy (pre-1.6, non-zip) `torch.save` of a torchvision
MobileNetV2 `features` state dict. That format is a sequence of pickles in one file:

    magic number, protocol version (1001), sys_info dict,
    the state dict (tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
        requires_grad, backward_hooks)` calls whose storages are persistent ids
        ('storage', torch.FloatStorage, key, location, numel, view_metadata)),
    the list of storage keys,
    then per key: an int64 little-endian element count and the raw elements.

`load_legacy_state_dict` reads it with a restricted `pickle.Unpickler` (only the names above are
resolvable, to stand-ins) and NumPy. `mobilenet_v2_symmetric_padding` is Keras' MobileNetV2 with
PyTorch's padding and BatchNorm epsilon, so the converted weights reproduce PyTorch's outputs.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import keras
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> the little-endian dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}

# MobileNetV2 inverted residual settings (Sandler et al. 2018, Table 2): expansion t, output
# channels c, repeats n, first stride s.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# PyTorch's BatchNorm2d default; Keras' MobileNetV2 uses 1e-3.
TORCH_BN_EPSILON = 1e-5


class _FormatError(Exception):
    """Something in the file is not what a legacy state dict holds."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    """Stand-in for torch._utils._rebuild_tensor(_v2): records where the tensor's data lies."""
    if not isinstance(storage, _Storage):
        raise _FormatError(f"tensor over {type(storage).__name__}, not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain data only (the header pickles and the storage key list)."""

    def find_class(self, module: str, name: str) -> Any:
        raise _FormatError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _FormatError(f"unexpected persistent id {pid!r}")


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, the tensor rebuild functions and torch storage types."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise _FormatError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise _FormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise _FormatError(f"unknown storage type {storage_type!r}")
        if view_metadata is not None:
            raise _FormatError(f"storage view {key} is not supported")
        storage = _Storage(str(key), storage_type.dtype, int(numel))
        if self.storages.setdefault(storage.key, storage) != storage:
            raise _FormatError(f"storage {key} declared twice differently")
        return storage


def _read_storages(f, keys: list, storages: Mapping[str, _Storage]) -> dict[str, np.ndarray]:
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise _FormatError("the storage key list does not match the tensors' storages")
    data = {}
    for key in keys:
        storage = storages[str(key)]
        header = f.read(8)
        if len(header) != 8:
            raise _FormatError(f"file ends before storage {key}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise _FormatError(f"storage {key} holds {numel} elements, the pickle says {storage.numel}")
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise _FormatError(f"file ends inside storage {key}")
        data[str(key)] = np.frombuffer(raw, dtype=storage.dtype)
    if f.read(1):
        raise _FormatError("trailing bytes after the last storage")
    return data


def _tensor(ref: _TensorRef, data: np.ndarray, name: str) -> np.ndarray:
    """The tensor `ref` as a new array (native byte order), checked against its storage's bounds."""
    if len(ref.size) != len(ref.stride) or min(ref.size + ref.stride + (ref.offset,), default=0) < 0:
        raise _FormatError(f"{name}: bad size {ref.size} / stride {ref.stride} / offset {ref.offset}")
    native = data.astype(data.dtype.newbyteorder("="), copy=False)
    if 0 in ref.size:
        return np.zeros(ref.size, native.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= len(native):
        raise _FormatError(f"{name}: reaches element {last} of a {len(native)}-element storage")
    view = np.lib.stride_tricks.as_strided(
        native[ref.offset:], shape=ref.size, strides=[s * native.itemsize for s in ref.stride],
        writeable=False)
    return np.array(view, copy=True)


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a legacy (pre-1.6, non-zip) `torch.save` of a state dict, without torch.

    Returns the tensors by name, in file order, as NumPy arrays of the stored dtype and shape.
    Raises ValueError (one line naming the file) for anything else: the zip format, other
    pickled objects, a big-endian file, truncated data.
    """
    try:
        with open(path, "rb") as f:
            if _NoGlobals(f).load() != LEGACY_MAGIC:
                raise _FormatError("no legacy torch.save magic number (zip-format files are not read)")
            if _NoGlobals(f).load() != LEGACY_PROTOCOL_VERSION:
                raise _FormatError("unknown legacy protocol version")
            sys_info = _NoGlobals(f).load()
            if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
                raise _FormatError("not written on a little-endian machine")
            unpickler = _StateDictUnpickler(f)
            state = unpickler.load()
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise _FormatError("the main pickle is not a state dict")
            data = _read_storages(f, _NoGlobals(f).load(), unpickler.storages)
            tensors = {}
            for name, ref in state.items():
                if not isinstance(ref, _TensorRef):
                    raise _FormatError(f"{name} is a {type(ref).__name__}, not a tensor")
                tensors[name] = _tensor(ref, data[ref.storage.key], name)
            return tensors
    except (_FormatError, pickle.UnpicklingError, EOFError, TypeError, ValueError,
            AttributeError, IndexError, KeyError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{path}: not a legacy PyTorch state dict: {reason}") from None


def _mobilenet_v2_layers() -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(Keras layer, PyTorch module, kind, PyTorch weight shape) in Keras' weight order.

    PyTorch names are torchvision's (<= 0.4) `features` of MobileNetV2: in a block `conv.0` is
    the 1x1 expansion, `conv.3` the depthwise and `conv.6` the projection (each followed by its
    BatchNorm); the first block (t=1) has no expansion, so its depthwise is `conv.0`.
    """
    layers = [("Conv1", "features.0.0", "conv", (32, 3, 3, 3)),
              ("bn_Conv1", "features.0.1", "bn", (32,))]
    c_in, block = 32, 0
    for t, c, n, _ in MOBILENET_V2_BLOCKS:
        for _ in range(n):
            hidden, torch_block = c_in * t, f"features.{block + 1}.conv"
            keras_block = f"block_{block}" if block else "expanded_conv"
            if t != 1:
                layers += [(f"{keras_block}_expand", f"{torch_block}.0", "conv", (hidden, c_in, 1, 1)),
                           (f"{keras_block}_expand_BN", f"{torch_block}.1", "bn", (hidden,))]
            dw = 3 if t != 1 else 0
            layers += [
                (f"{keras_block}_depthwise", f"{torch_block}.{dw}", "depthwise", (hidden, 1, 3, 3)),
                (f"{keras_block}_depthwise_BN", f"{torch_block}.{dw + 1}", "bn", (hidden,)),
                (f"{keras_block}_project", f"{torch_block}.{dw + 3}", "conv", (c, hidden, 1, 1)),
                (f"{keras_block}_project_BN", f"{torch_block}.{dw + 4}", "bn", (c,))]
            c_in, block = c, block + 1
    return layers + [("Conv_1", f"features.{block + 1}.0", "conv", (1280, c_in, 1, 1)),
                     ("Conv_1_bn", f"features.{block + 1}.1", "bn", (1280,))]


MOBILENET_V2_LAYERS = _mobilenet_v2_layers()
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # Keras: gamma, beta, mean, var


def keras_mobilenet_v2_weights(state: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch MobileNetV2 `features` state dict -> Keras MobileNetV2(include_top=False) weights.

    The list is in `model.get_weights()` order, float32. Convolutions OIHW -> HWIO, depthwise
    [C, 1, kh, kw] -> [kh, kw, C, 1], BatchNorm (weight, bias, running_mean, running_var) ->
    (gamma, beta, moving_mean, moving_variance); `num_batches_tracked` is dropped. Raises
    ValueError naming the layer for a missing tensor or wrong shape, and for tensors left over.
    """
    weights, used = [], set()
    for keras_name, torch_name, kind, shape in MOBILENET_V2_LAYERS:
        params = _BN_PARAMS if kind == "bn" else ("weight",)
        for param in params:
            key = f"{torch_name}.{param}"
            if key not in state:
                raise ValueError(f"{keras_name}: {key} is missing from the state dict")
            value = np.asarray(state[key])
            if value.shape != shape:
                raise ValueError(f"{keras_name}: {key} has shape {list(value.shape)}, "
                                 f"expected {list(shape)}")
            if kind == "conv":
                value = value.transpose(2, 3, 1, 0)
            elif kind == "depthwise":
                value = value.transpose(2, 3, 0, 1)
            weights.append(value.astype(np.float32))
            used.add(key)
        used.add(f"{torch_name}.num_batches_tracked")
    left = [k for k in state if k not in used]
    if left:
        raise ValueError(f"state dict has {len(left)} tensors MobileNetV2 does not use, e.g. {left[0]}")
    return weights


def mobilenet_v2_symmetric_padding(input_shape: tuple[int | None, int | None, int] = (256, 128, 3),
                                   ) -> keras.Model:
    """Keras MobileNetV2 (width 1.0, include_top=False) with PyTorch's padding and BN epsilon.

    Keras pads its stride-2 3x3 convolutions TensorFlow-style (`Conv1` is `padding="same"`, the
    blocks' depthwise ones follow a `correct_pad` ZeroPadding2D): one pixel at the bottom/right
    only, on even sizes. PyTorch pads one pixel on every side. Here `Conv1` gets a
    ZeroPadding2D(((1, 1), (1, 1))) named `Conv1_pad` and `padding="valid"`, and every block
    ZeroPadding2D (each sits before a stride-2 depthwise convolution) becomes ((1, 1), (1, 1));
    output sizes are unchanged. BatchNorm epsilon is PyTorch's 1e-5 instead of Keras' 1e-3.
    Layer names and weight order are Keras', so `keras_mobilenet_v2_weights` loads with
    `set_weights`.

    Input: [B, H, W, 3] RGB in [0, 1] normalised with torchvision's ImageNet statistics,
    `tf_reid.data.augment.normalize` (what AlignedReID applies) — not Keras' [-1, 1]
    `preprocess_input`.
    Output: [B, ceil(H/32), ceil(W/32), 1280] (after the final ReLU6).
    """
    base = keras.applications.MobileNetV2(input_shape=input_shape, alpha=1.0, include_top=False,
                                          weights=None)

    def torch_semantics(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            config["padding"] = ((1, 1), (1, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = TORCH_BN_EPSILON
        elif layer.name == "Conv1":
            config["padding"] = "valid"
        return layer.__class__.from_config(config)

    def pad_first_conv(layer: keras.layers.Layer, *args, **kwargs):
        if layer.name == "Conv1":
            args = (keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="Conv1_pad")(args[0]),
                    *args[1:])
        return layer(*args, **kwargs)

    model = keras.models.clone_model(base, clone_function=torch_semantics,
                                     call_function=pad_first_conv)
    return keras.Model(model.inputs[0], model.outputs[0], name="mobilenetv2_torch_padding")
