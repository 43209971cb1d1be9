"""The torch-free reader of legacy PyTorch weights and the MobileNetV2 conversion to Keras."""

from __future__ import annotations

import struct
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO
from tf_reid.models import torch_weights
from tfrecords_builder.atomic import OutputError
from tools.convert_torch_weights import convert_weights

WEIGHTS = "weights/mobilenetv2_imagenet_pytorch.pt"


@pytest.fixture(scope="module")
def state(shared):
    return torch_weights.load_legacy_state_dict(shared / WEIGHTS)


# --- a legacy file written by hand, opcode by opcode (pickle protocol 2) -------------------------

def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(storage_type: str, key: str, numel: int, offset: int, size, stride) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    storage = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"),
                     _int(numel), b"N") + b"Q"  # BINPERSID
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                  b"\x89", hooks)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"  # REDUCE


def _legacy_file(entries: dict[str, bytes], storages: dict[str, np.ndarray]) -> bytes:
    import pickle

    header = b"".join(pickle.dumps(obj, protocol=2) for obj in (
        0x1950A86A20F9469CFC6C, 1001,
        {"protocol_version": 1001, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
            + b"".join(_str(k) + v for k, v in entries.items()) + b"u.")  # SETITEMS, STOP
    body = pickle.dumps(list(storages), protocol=2)
    for data in storages.values():
        body += struct.pack("<q", data.size) + data.tobytes()
    return header + main + body


def _small_file() -> bytes:
    return _legacy_file(
        {"a.weight": _tensor("FloatStorage", "10", 6, 0, (2, 3), (3, 1)),
         # Transposed view starting at element 1 of a storage shared with c.running_var.
         "b.running_mean": _tensor("FloatStorage", "20", 10, 1, (2, 2), (1, 4)),
         "c.running_var": _tensor("FloatStorage", "20", 10, 0, (3,), (3,)),
         "c.num_batches_tracked": _tensor("LongStorage", "30", 1, 0, (), ())},
        {"10": np.array([1, 2, 3, 4, 5, 6], "<f4"),
         "20": np.arange(10, dtype="<f4") * 0.5,
         "30": np.array([7], "<i8")})


def test_reads_a_hand_built_legacy_file_exactly(tmp_path):
    path = tmp_path / "small.pt"
    path.write_bytes(_small_file())
    tensors = torch_weights.load_legacy_state_dict(path)
    assert list(tensors) == ["a.weight", "b.running_mean", "c.running_var", "c.num_batches_tracked"]
    expected = {"a.weight": np.array([[1, 2, 3], [4, 5, 6]], np.float32),
                # storage 0, .5, 1, ..., 4.5: elements 1 + i + 4j.
                "b.running_mean": np.array([[0.5, 2.5], [1.0, 3.0]], np.float32),
                "c.running_var": np.array([0.0, 1.5, 3.0], np.float32),
                "c.num_batches_tracked": np.array(7, np.int64)}
    for name, want in expected.items():
        assert tensors[name].dtype == want.dtype, name
        assert tensors[name].shape == want.shape, name
        np.testing.assert_array_equal(tensors[name], want, err_msg=name)
    tensors["b.running_mean"][0, 0] = -1  # a copy, not a read-only view of the file buffer


@pytest.mark.parametrize("damage", ["truncated", "foreign_global", "not_a_pickle"])
def test_bad_files_are_one_line_value_errors_naming_the_file(tmp_path, damage):
    data = _small_file()
    if damage == "truncated":
        data = data[:-3]
    elif damage == "foreign_global":
        data = data.replace(b"ctorch\nFloatStorage\n", b"cos\nsystem\n", 1)
    else:
        data = b"PK\x03\x04 a zip-format torch.save"
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="bad.pt: not a legacy PyTorch state dict") as info:
        torch_weights.load_legacy_state_dict(path)
    assert "\n" not in str(info.value)


# --- the real ImageNet MobileNetV2 ------------------------------------------------------------

def test_real_file_holds_mobilenet_v2_features(state):
    params = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert sum(v.size for v in params.values()) == 2_257_984  # ../shared/README.md
    assert len(state) == 312  # 52 convolutions + 52 BatchNorms x 5 tensors
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in params.values())
    assert np.all(state["features.0.1.running_var"] > 0)


def test_shape_mismatch_names_the_keras_layer(state):
    broken = dict(state)
    broken["features.2.conv.3.weight"] = np.zeros((96, 1, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"block_1_depthwise: features.2.conv.3.weight has shape"):
        torch_weights.keras_mobilenet_v2_weights(broken)
    extra = dict(state, **{"classifier.1.weight": np.zeros((10, 1280), np.float32)})
    with pytest.raises(ValueError, match="classifier.1.weight"):
        torch_weights.keras_mobilenet_v2_weights(extra)


def _conv(x, w, stride, pad):
    """PyTorch Conv2d (no bias) on [N, H, W, Cin] with OIHW weights and symmetric zero padding."""
    k = w.shape[2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = 0
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + patch @ w[:, :, i, j].T
    return out


def _depthwise(x, w, stride):
    """PyTorch Conv2d(groups=C, kernel 3, padding 1) with [C, 1, 3, 3] weights."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (x.shape[1] - 3) // stride + 1, (x.shape[2] - 3) // stride + 1
    out = 0
    for i in range(3):
        for j in range(3):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + patch * w[:, 0, i, j]
    return out


def _bn(x, sd, name):
    """BatchNorm2d in eval mode, PyTorch's eps 1e-5."""
    p = {k: sd[f"{name}.{k}"].astype(np.float64)
         for k in ("weight", "bias", "running_mean", "running_var")}
    return (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def torch_mobilenet_v2(sd, x):
    """torchvision (0.4) MobileNetV2.features, float64, straight from the state dict's names."""
    w = {k: v.astype(np.float64) for k, v in sd.items()}
    x = _relu6(_bn(_conv(x, w["features.0.0.weight"], 2, 1), w, "features.0.1"))
    index, c_in = 1, 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for r in range(n):
            stride, p, h = (s if r == 0 else 1), f"features.{index}.conv", x
            if t == 1:  # conv.0 depthwise, conv.1 BN, conv.3 project, conv.4 BN
                h = _relu6(_bn(_depthwise(h, w[f"{p}.0.weight"], stride), w, f"{p}.1"))
                h = _bn(_conv(h, w[f"{p}.3.weight"], 1, 0), w, f"{p}.4")
            else:  # conv.0/1 expand, conv.3/4 depthwise, conv.6/7 project
                h = _relu6(_bn(_conv(h, w[f"{p}.0.weight"], 1, 0), w, f"{p}.1"))
                h = _relu6(_bn(_depthwise(h, w[f"{p}.3.weight"], stride), w, f"{p}.4"))
                h = _bn(_conv(h, w[f"{p}.6.weight"], 1, 0), w, f"{p}.7")
            x = x + h if stride == 1 and c_in == c else h
            index, c_in = index + 1, c
    return _relu6(_bn(_conv(x, w["features.18.0.weight"], 1, 0), w, "features.18.1"))


@pytest.fixture(scope="module")
def inputs_and_reference(state):
    pixels = np.random.default_rng(0).uniform(0, 1, (2, 64, 32, 3))
    x = (pixels - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return x, torch_mobilenet_v2(state, x)


def test_converted_keras_model_matches_pytorch_forward_pass(state, inputs_and_reference):
    x, reference = inputs_and_reference
    assert reference.shape == (2, 2, 1, 1280)
    model = torch_weights.mobilenet_v2_symmetric_padding((64, 32, 3))
    model.set_weights(torch_weights.keras_mobilenet_v2_weights(state))
    assert model.count_params() == 2_257_984
    got = np.asarray(model(x.astype(np.float32), training=False), np.float64)
    scale = np.abs(reference).max()
    assert scale > 0.5  # a real activation map, not all zeros
    assert np.abs(got - reference).max() <= 1e-4 * scale


def test_stock_keras_padding_would_not_match(state, inputs_and_reference):
    """Why the rebuilt model exists: Keras' own MobileNetV2 pads stride-2 convs asymmetrically."""
    x, reference = inputs_and_reference
    stock = keras.applications.MobileNetV2(input_shape=(64, 32, 3), include_top=False, weights=None)
    stock.set_weights(torch_weights.keras_mobilenet_v2_weights(state))
    got = np.asarray(stock(x.astype(np.float32), training=False), np.float64)
    assert np.abs(got - reference).max() > 1e-2 * np.abs(reference).max()


# --- the command line -------------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.convert_torch_weights", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_loadable_weights_and_refuses_to_overwrite(shared, state, tmp_path):
    output = tmp_path / "out" / "mobilenet_v2_imagenet.weights.h5"
    args = (f"--input={shared / WEIGHTS}", f"--output={output}")
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["parameters: 2,257,984", f"wrote {output}"]
    assert result.stderr == ""
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp file left

    model = torch_weights.mobilenet_v2_symmetric_padding((96, 64, 3))
    model.load_weights(output)
    for got, want in zip(model.get_weights(), torch_weights.keras_mobilenet_v2_weights(state)):
        np.testing.assert_array_equal(got, want)

    # The command's function, in this process (its bad-input lines: tests/tools/test_bad_input.py).
    written = output.read_bytes()
    with pytest.raises(OutputError, match="output already exists"):
        convert_weights(str(shared / WEIGHTS), str(output), overwrite=False)
    assert output.read_bytes() == written
    output.write_bytes(b"stale")
    convert_weights(str(shared / WEIGHTS), str(output), overwrite=True)
    model.load_weights(output)
    for got, want in zip(model.get_weights(), torch_weights.keras_mobilenet_v2_weights(state)):
        np.testing.assert_array_equal(got, want)
