"""Synthetic pedestrians: a seeded procedural stand-in for Market-1501 (no download needed).

Layout written by `generate` and read by `parse`:
  OUT/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>_<index:04d>.png
  OUT/synthetic.json   (the generation parameters)

Identities differ by clothing colour and pattern per body part (hair, torso, legs, shoes, bag);
cameras by gain, colour cast and background; images by box misalignment, pose, flips,
occlusion and noise. Train and test identities are disjoint; each test identity has one query
per camera and its other images in the gallery, so every query has a cross-camera match.
"""

from __future__ import annotations

import concurrent.futures
import json
import os

import numpy as np
from PIL import Image

from tfrecords_builder import atomic
from tfrecords_builder.naming import MARKET_FOLDERS, PID_CAM, parse_folders
from tfrecords_builder.records import DatasetError, ParsedDataset, find_root

PARAMS_FILE = "synthetic.json"
KIND = "synthetic"  # the output's marker (`atomic.check_target`)
VERSION = 1  # bump when the drawing changes, so old outputs are told apart
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
_IDENTITY, _CAMERA, _IMAGE = 0, 1, 2  # rng stream kinds
PARTS = ("background", "skin", "hair", "top", "top2", "legs", "shoes", "bag_colour", "object")
BACKGROUND, SKIN, HAIR, TOP, TOP2, LEGS, SHOES, BAG, OBJECT = range(len(PARTS))


def stream(seed: int, kind: int, pid: int = 0, cam: int = 0, index: int = 0) -> np.random.Generator:
    """An independent stream per (seed, kind, pid, cam, index), so generation order is moot."""
    return np.random.default_rng([seed, kind, pid, cam, index])


def identity_params(seed: int, pid: int) -> dict[str, np.ndarray]:
    """Clothing of one identity: colours are RGB in [0, 1], lengths in figure heights."""
    r = stream(seed, _IDENTITY, pid)
    tone = r.uniform()
    return {
        "skin": (1 - tone) * np.array([0.93, 0.76, 0.64]) + tone * np.array([0.42, 0.28, 0.2]),
        "hair": r.uniform(0.03, 0.6, 3), "hairline": r.uniform(0.035, 0.075),
        "width": r.uniform(0.1, 0.135),  # torso half-width
        "top": r.uniform(0.05, 0.95, 3), "top2": r.uniform(0.05, 0.95, 3),
        "pattern": r.integers(0, 4),  # solid, horizontal stripes, vertical stripes, checker
        "period": r.uniform(0.025, 0.06), "sleeve": r.choice([0.3, 0.5]),
        "legs": r.uniform(0.03, 0.9, 3), "skirt": r.uniform() < 0.25,
        "shoes": r.uniform(0.0, 0.6, 3),
        "bag": r.uniform() < 0.4, "bag_colour": r.uniform(0.05, 0.9, 3),
    }


def camera_params(seed: int, cam: int) -> dict[str, np.ndarray]:
    """Illumination, colour cast and background of one camera."""
    r = stream(seed, _CAMERA, cam=cam)
    return {
        "gain": r.uniform(0.65, 1.25), "cast": r.uniform(0.8, 1.2, 3),
        "bg": r.uniform(0.15, 0.85, 3), "bg2": r.uniform(0.15, 0.85, 3),
        "gradient": r.uniform(-0.6, 0.6), "texture": r.uniform(0.05, 0.35),
        "freq": r.uniform(-3.0, 3.0, 2),  # texture cycles per crop width along (x, y)
    }


def image_params(seed: int, pid: int, cam: int, index: int, height: int,
                 width: int) -> dict[str, np.ndarray]:
    """Box, pose, occlusion and noise of one image; noise is [3, height, width], in 1/255."""
    r = stream(seed, _IMAGE, pid, cam, index)
    scale = r.uniform(0.8, 1.0)  # figure height / crop height
    return {
        "fh": scale * height, "top": height * ((1 - scale) / 2 + r.uniform(-0.08, 0.08)),
        "cx": width * (0.5 + r.uniform(-0.1, 0.1)), "flip": r.choice([-1.0, 1.0]),
        "stride": r.uniform(-0.3, 0.3), "jitter": r.uniform(0.85, 1.15),
        "phase": r.uniform(0, 2 * np.pi),
        "occluded": r.uniform() < 0.35, "occ_bg": r.uniform() < 0.5,
        "occ_box": np.array([r.uniform(0.35, 0.85), r.uniform(0.15, 0.4),  # top, height
                             r.uniform(-0.3, 0.5), r.uniform(0.4, 1.0)]),  # left, width
        "object": r.uniform(0.05, 0.95, 3),
        "noise": r.standard_normal((3, height, width), np.float32) * r.uniform(1.5, 5.0),  # /255
    }


def stack(params: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """List of N per-image dicts -> dict of arrays with a leading [N] axis (floats as float32)."""
    out = {k: np.stack([np.asarray(p[k]) for p in params]) for k in params[0]}
    return {k: a.astype(np.float32) if a.dtype == np.float64 else a for k, a in out.items()}


def _s(a: np.ndarray) -> np.ndarray:
    """[N] -> [N, 1, 1], broadcasting against [N, H, W]."""
    return a[:, None, None]


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates y [1, H, 1] and x [1, 1, W], in pixels."""
    return (np.arange(height, dtype=np.float32)[None, :, None] + 0.5,
            np.arange(width, dtype=np.float32)[None, None, :] + 0.5)


def _c(a: np.ndarray) -> np.ndarray:
    """[N, 3] -> [3, N, 1, 1], broadcasting against channel-first [3, N, H, W]."""
    return a.T[:, :, None, None]


def background(cam: dict[str, np.ndarray], img: dict[str, np.ndarray], height: int,
               width: int) -> np.ndarray:
    """Per-camera gradient and sinusoidal texture between two colours: [3, N, H, W]."""
    y, x = _grid(height, width)
    y, x = y / height, x / width
    wave = np.sin(2 * np.pi * (_s(cam["freq"][:, 0]) * x + _s(cam["freq"][:, 1]) * y * height
                               / width) + _s(img["phase"]))
    t = np.clip(0.5 + _s(cam["gradient"]) * (y - 0.5) + _s(cam["texture"]) * wave, 0, 1)
    return _c(cam["bg"]) + _c(cam["bg2"] - cam["bg"]) * t


def person(ident: dict[str, np.ndarray], img: dict[str, np.ndarray], height: int,
           width: int) -> tuple[np.ndarray, np.ndarray]:
    """Part labels (indices into PARTS) [N, H, W] and body shading [N, H, W] of the figures.

    Figure coordinates: v runs from the top of the head (0) to the soles (1), u across, both in
    figure heights, so parts stay proportional however the box is shifted or scaled.
    """
    y, x = _grid(height, width)
    v = (y - _s(img["top"])) / _s(img["fh"])
    u = _s(img["flip"]) * (x - _s(img["cx"])) / _s(img["fh"])
    w = _s(ident["width"])
    band = lambda lo, hi: (v >= lo) & (v < hi)  # noqa: E731
    torso = band(0.15, 0.52) & (np.abs(u) < w * (1 - 0.3 * (v - 0.15)))
    arms = band(0.16, 0.52) & (np.abs(u) >= w * 0.9) & (np.abs(u) < w * 0.9 + 0.04)
    step = _s(img["stride"]) * np.clip(v - 0.55, 0, None)  # legs part with the stride
    leg_u = np.minimum(np.abs(u + 0.05 + step), np.abs(u - 0.05 - step))
    legs = band(0.52, 0.94) & ((leg_u < 0.045) | (band(0.5, 0.6) & (np.abs(u) < w * 0.8)))
    skirt = _s(ident["skirt"]) & band(0.5, 0.72) & (np.abs(u) < w * 0.8 + 0.25 * (v - 0.5))
    head = (u / 0.055) ** 2 + ((v - 0.075) / 0.07) ** 2 <= 1
    bag = _s(ident["bag"]) & ((band(0.36, 0.52) & (u > w + 0.02) & (u < w + 0.11)) | (
        band(0.16, 0.36) & (np.abs(u - (w + 0.065) + 0.4 * (v - 0.36)) < 0.01)))  # and strap
    hs = np.floor((v - 0.15) / _s(ident["period"])) % 2 == 1
    vs = np.floor(u / _s(ident["period"])) % 2 == 1
    p = _s(ident["pattern"])
    top = np.where(((p == 1) & hs) | ((p == 2) & vs) | ((p == 3) & (hs ^ vs)), TOP2, TOP)

    labels = np.where(arms, np.where(v < _s(ident["sleeve"]), top, SKIN), BACKGROUND)
    labels = np.where(torso, top, labels)
    labels = np.where(legs, np.where(_s(ident["skirt"]), SKIN, LEGS), labels)
    labels = np.where(skirt, LEGS, labels)
    labels = np.where(band(0.93, 1.0) & (leg_u < 0.05), SHOES, labels)
    labels = np.where(band(0.13, 0.16) & (np.abs(u) < 0.025), SKIN, labels)  # neck
    labels = np.where(head, np.where(v < _s(ident["hairline"]), HAIR, SKIN), labels)
    labels = np.where(bag, BAG, labels)
    shade = 1 - 0.35 * np.clip(np.abs(u) / (w + 0.05), 0, 1) ** 2  # a cylinder lit from the front
    return labels.astype(np.uint8), shade


def occlude(labels: np.ndarray, img: dict[str, np.ndarray]) -> np.ndarray:
    """Labels [N, H, W] with a random box covered by background or by another object."""
    _, height, width = labels.shape
    y, x = _grid(height, width)
    y, x = y / height, x / width
    top, tall, left, wide = (_s(img["occ_box"][:, i]) for i in range(4))
    box = _s(img["occluded"]) & (y >= top) & (y < top + tall) & (x >= left) & (x < left + wide)
    return np.where(box, np.where(_s(img["occ_bg"]), BACKGROUND, OBJECT), labels).astype(np.uint8)


def render(ident: dict[str, np.ndarray], cam: dict[str, np.ndarray], img: dict[str, np.ndarray],
           height: int, width: int) -> np.ndarray:
    """Stacked per-image parameters (leading axis N) -> uint8 images [N, H, W, 3]."""
    labels, shade = person(ident, img, height, width)
    labels = occlude(labels, img)
    palette = np.stack([np.zeros_like(ident["skin"])] + [
        ident[part] if part in ident else img[part] for part in PARTS[1:]], axis=1)  # [N, P, 3]
    flat = labels + len(PARTS) * np.arange(len(labels), dtype=np.int32)[:, None, None]
    # Channel-first [3, N, H, W]: per-image colours broadcast fast over contiguous (H, W).
    colour = np.take(palette.reshape(-1, 3).T, flat, axis=1)
    y = _grid(height, width)[0] / height
    colour *= np.where(labels == OBJECT, 1 - 0.3 * y, np.where(labels == BAG, 1, shade))
    scene = np.where(labels == BACKGROUND, background(cam, img, height, width), colour)
    scene *= _c(cam["cast"] * (255 * cam["gain"] * img["jitter"])[:, None])
    scene += img["noise"].swapaxes(0, 1)
    pixels = np.clip(np.rint(scene, out=scene), 0, 255, out=scene).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(pixels, 0, -1))  # [N, H, W, 3]


def draw_identity(seed: int, pid: int, num_cameras: int, images_per_camera: int, height: int,
                  width: int) -> np.ndarray:
    """All images of one identity, cameras 1..C by index 0..K-1: uint8 [C * K, H, W, 3]."""
    keys = [(c, i) for c in range(1, num_cameras + 1) for i in range(images_per_camera)]
    return render(stack([identity_params(seed, pid)] * len(keys)),
                  stack([camera_params(seed, c) for c, _ in keys]),
                  stack([image_params(seed, pid, c, i, height, width) for c, i in keys]),
                  height, width)


def image_path(pid: int, cam: int, index: int, num_train_identities: int,
               image_format: str) -> str:
    """'query/0007_c2_0000.png': test identities give index 0 of each camera to the query."""
    split = "train" if pid <= num_train_identities else ("query" if index == 0 else "gallery")
    return os.path.join(MARKET_FOLDERS[split], f"{pid:04d}_c{cam}_{index:04d}.{image_format}")


def generate(output_dir: str, num_identities: int = 100, num_cameras: int = 4,
             images_per_identity_per_camera: int = 4, height: int = 128, width: int = 64,
             num_train_identities: int | None = None, seed: int = 0, image_format: str = "png",
             overwrite: bool = False) -> dict[str, int]:
    """Writes a synthetic Market-style dataset to `output_dir`, atomically.

    Identities 1..num_train_identities are training identities, the rest test identities.

    Args:
      output_dir: folder to create; written as `output_dir.partial-<pid>`, then renamed
        (`atomic.folder`).
      num_identities: P, number of identities (train + test).
      num_cameras: cameras, >= 2; every identity appears in every camera.
      images_per_identity_per_camera: K, >= 2 (a test identity gives 1 query, K-1 gallery).
      height, width: image size in pixels.
      num_train_identities: identities for training; None = num_identities // 2.
      seed: same seed, same bytes.
      image_format: "png" or "jpg".
      overwrite: replace an existing synthetic output.

    Returns:
      Counts: images per split ("train", "query", "gallery") and identities per side.

    Raises:
      ValueError: on inconsistent arguments.
      atomic.OutputError: when `output_dir` exists and may not be replaced.
    """
    train_ids = num_identities // 2 if num_train_identities is None else num_train_identities
    k = images_per_identity_per_camera
    if num_cameras < 2 or k < 2 or min(height, width) < 8:
        raise ValueError("need num_cameras >= 2, images_per_identity_per_camera >= 2 and "
                         "height, width >= 8")
    if not 1 <= train_ids < num_identities:
        raise ValueError(f"need 1 <= num_train_identities < num_identities, got {train_ids} "
                         f"and {num_identities}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, "
                         f"got {image_format!r}")
    atomic.check_target(output_dir, overwrite, kind=KIND)
    params = {"version": VERSION, "seed": seed, "num_identities": num_identities,
              "num_train_identities": train_ids, "num_cameras": num_cameras,
              "images_per_identity_per_camera": images_per_identity_per_camera,
              "height": height, "width": width, "image_format": image_format}
    with atomic.folder(output_dir, kind=KIND) as partial:  # check_target allowed replacing
        for sub in MARKET_FOLDERS.values():
            os.makedirs(os.path.join(partial, sub))

        def write(pid: int) -> None:
            images = draw_identity(seed, pid, num_cameras, k, height, width)
            for n, pixels in enumerate(images):
                path = image_path(pid, n // k + 1, n % k, train_ids, image_format)
                Image.fromarray(pixels).save(os.path.join(partial, path), IMAGE_FORMATS[
                    image_format], quality=95, compress_level=1)

        with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:  # numpy, zlib: no GIL
            list(pool.map(write, range(1, num_identities + 1)))
        with open(os.path.join(partial, PARAMS_FILE), "w") as f:
            json.dump(params, f, indent=2, sort_keys=True)
    test_ids = num_identities - train_ids
    return {"train": train_ids * num_cameras * k, "query": test_ids * num_cameras,
            "gallery": test_ids * num_cameras * (k - 1), "train_identities": train_ids,
            "test_identities": test_ids}


def parse(data_dir: str) -> ParsedDataset:
    """Parses a dataset written by `generate` (or its parent folder, as `synthetic/`)."""
    root = find_root(data_dir, MARKET_FOLDERS["train"], ("synthetic",))
    protocol, params_path = {"protocol": "single-query"}, os.path.join(root, PARAMS_FILE)
    if os.path.isfile(params_path):
        try:
            with open(params_path) as f:
                params = json.load(f)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise DatasetError(f"{params_path}: not valid JSON ({e})") from None
        if not isinstance(params, dict):
            raise DatasetError(f"{params_path}: not a JSON object of generation parameters")
        protocol.update(params)
    return ParsedDataset(dataset="synthetic", source=root,
                 records=parse_folders(root, MARKET_FOLDERS, PID_CAM), protocol=protocol)
