"""python -m tools.visualize_alignment --workdir=runs/smoke --query=0 --gallery=5 --output=runs/smoke/alignment_q0_g5.png

Draws how AlignedReID aligns two images (Zhang et al. 2017, arXiv:1711.08184, Figs. 2-3): image
--query of the query split and image --gallery of the gallery split (indices in dataset order,
as in the features file of `tf_reid.evaluate --save_features` and the q<I> captions of
`tools.visualize_ranks`; --query_split / --gallery_split pick other splits, e.g. two train
images), run through student --student of the workdir's --which checkpoint.

  left   the two images as the model sees them (decoded and resized as in evaluation), each cut
         into its H horizontal stripes, and a line from query stripe i to gallery stripe j for
         every cell (i, j) of the shortest path: its width is proportional to the cell's share
         d_ij / local distance (a line of average share is LINE_WIDTH points wide), its colour
         is d_ij on the heatmap's colour scale.
  right  the H x H element distances d_ij = tanh(||f_i - g_j|| / 2) as a heatmap (values in the
         cells; colours span the pair's own smallest to largest d_ij, so the structure shows
         however close the stripes are), with the shortest path from (0, 0) to (H-1, H-1)
         drawn over it.
  title  the pair's identities and cameras, its local distance (the path's length) and its
         global distance.

The distances are the ones `tf_reid.evaluate` ranks by (without --flip): each stripe is
L2-normalised over its channels first (always, as evaluation does; d_ij then lies in
[0, tanh(1)]), and the global features are L2-normalised with --normalize (its meaning there).
Only the shard holding each image is read. The picture is FIGURE_SIZE inches at `figures.DPI`.
--output may lie in the workdir or the data_dir, but may not be a file the command reads.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import glob  # noqa: E402
import os  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_reid.data.eval_input import eval_dataset  # noqa: E402
from tf_reid.evaluation import extract, figures, matching  # noqa: E402
from tf_reid.evaluation.alignment import element_distances, shortest_path  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder import atomic  # noqa: E402
from tfrecords_builder.manifest import MANIFEST, read_manifest  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS

FIGURE_SIZE = (11.0, 6.0)  # inches: 1100 x 600 pixels at figures.DPI
LINE_WIDTH = 3.0  # points, of a path line whose cell has the average share 1 / (M + L - 1)
COLOURMAP = "viridis"
ANNOTATE_UP_TO = 12  # stripes per image up to which the heatmap's cells show their values


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("workdir", None, "A tf_reid.train workdir (model.json and checkpoints).")
    flags.DEFINE_enum("which", "best", list(workdir_lib.WHICH),
                      "Checkpoint: the best evaluation (falls back to the last) or the last.")
    flags.DEFINE_integer("student", 0, "Which student of a mutual-learning run.", lower_bound=0)
    flags.DEFINE_string("data_dir", None, "TFRecords folder (default: the data_dir in model.json).")
    flags.DEFINE_integer("query", None, "Index of the first image in --query_split (dataset "
                         "order).", lower_bound=0)
    flags.DEFINE_integer("gallery", None, "Index of the second image in --gallery_split "
                         "(dataset order).", lower_bound=0)
    flags.DEFINE_string("query_split", "query", "Split of the first image.")
    flags.DEFINE_string("gallery_split", "gallery", "Split of the second image.")
    flags.DEFINE_string("output", None, "The PNG to write (replaced if it exists).")
    flags.DEFINE_bool("normalize", True, "L2-normalise the global features before the global "
                      "distance (the stripes always are, as in evaluation).")


def input_files(workdir: str, which: str, data_dir: str, manifest: dict[str, Any],
                splits: Sequence[str]) -> list[str]:
    """The files the command reads: model.json, the checkpoint's files, manifest.json and the
    splits' shards (the output may lie in the workdir or data_dir, but may not be one of them)."""
    prefix = workdir_lib.checkpoint_path(workdir, which)
    return [os.path.join(workdir, workdir_lib.MODEL_FILE),
            os.path.join(os.path.dirname(prefix), "checkpoint"),
            *glob.glob(glob.escape(prefix) + ".*"), os.path.join(data_dir, MANIFEST),
            *(os.path.join(data_dir, shard["file"]) for split in splits
              for shard in manifest["splits"][split]["shards"])]


def checked_index(manifest: dict[str, Any], data_dir: str, split: str, index: int,
                  flag: str) -> None:
    """Raises FlagError naming `--flag` (or `--flag_split`) unless `split` has image `index`."""
    splits = manifest.get("splits", {})
    if split not in splits:
        raise FlagError(f"--{flag}_split={split}: {data_dir} has no such split (it has "
                        f"{', '.join(sorted(splits))})")
    size = sum(shard["records"] for shard in splits[split]["shards"])
    if not 0 <= index < size:
        raise FlagError(f"--{flag}={index} out of range: the '{split}' split of {data_dir} has "
                        f"{size} images (0..{size - 1})")


def read_image(data_dir: str, manifest: dict[str, Any], split: str, index: int, height: int,
               width: int) -> dict[str, np.ndarray]:
    """Image `index` of `split` in dataset order, decoded and resized as evaluation does.

    Only the shard holding it is read (and checked against the manifest's checksum): the
    evaluation dataset of a manifest listing that one shard, from the image's place in it.

    Returns:
      {"image": [height, width, 3] uint8, "pid", "camid", "path", ...} as one element of
      `tf_reid.data.eval_input.eval_dataset`.
    """
    start = 0
    for shard in manifest["splits"][split]["shards"]:
        if index < start + shard["records"]:
            break
        start += shard["records"]
    one_shard = {**manifest, "splits": {**manifest["splits"],
                                        split: {**manifest["splits"][split], "shards": [shard]}}}
    dataset = eval_dataset(data_dir, split, height, width, batch_size=1, manifest=one_shard)
    batch = next(iter(dataset.skip(index - start).take(1)))
    return {key: value.numpy()[0] for key, value in batch.items()}


def stripe_centre(k: int, stripes: int, height: float) -> float:
    """Vertical centre, in pixels, of stripe k of an image `height` high cut into `stripes`."""
    return (k + 0.5) * height / stripes


def draw(path: str, images: Sequence[np.ndarray], captions: Sequence[str], d: np.ndarray,
         cells: Sequence[tuple[int, int]], title: str) -> None:
    """Writes the picture (see the module docstring) as a PNG.

    Args:
      path: the PNG to write.
      images: the two [H, W, 3] uint8 images, the rows' image first.
      captions: a caption above each image.
      d: [M, L] element distances.
      cells: the shortest path's cells (i, j), from (0, 0) to (M-1, L-1).
      title: the figure's title.
    """
    from matplotlib import colormaps, patheffects
    from matplotlib.colors import Normalize

    rows, cols = d.shape
    total = float(sum(d[i, j] for i, j in cells))
    colours, scale = colormaps[COLOURMAP], Normalize(float(d.min()), float(d.max()))
    figure, (left, right) = figures.new_figure(*FIGURE_SIZE, columns=2)
    figure.suptitle(title, fontsize=11)

    height, width = images[0].shape[:2]
    gap = 1.2 * width  # between the images, room for the lines
    for image, x0, stripes, caption in zip(images, (0.0, width + gap), (rows, cols), captions):
        left.imshow(image, extent=(x0, x0 + width, height, 0), interpolation="nearest")
        for k in range(1, stripes):
            left.plot([x0, x0 + width], [k * height / stripes] * 2, color="white", lw=1.0,
                      ls=(0, (3, 2)))
        left.text(x0 + width / 2, -0.02 * height, caption, ha="center", va="bottom", fontsize=9)
    for k, side, x in ((rows, "right", -0.04 * width), (cols, "left", 2.04 * width + gap)):
        for s in range(k):
            left.text(x, stripe_centre(s, k, height), str(s), ha=side, va="center", fontsize=7,
                      color="0.35")
    for i, j in cells:
        share = d[i, j] / total if total > 0 else 1.0 / len(cells)
        line_width = max(LINE_WIDTH * len(cells) * share, 0.3)
        # A dark outline: the colour map's light end would vanish on the white background.
        left.plot([width, width + gap],
                  [stripe_centre(i, rows, height), stripe_centre(j, cols, height)],
                  lw=line_width, color=colours(scale(d[i, j])), solid_capstyle="butt",
                  marker="o", ms=2.5, mfc="black", mec="black",
                  path_effects=[patheffects.Stroke(linewidth=line_width + 1.2, foreground="0.2"),
                                patheffects.Normal()])
    left.set_xlim(-0.12 * width, 2.12 * width + gap)
    left.set_ylim(height * 1.01, -0.16 * height)
    left.set_aspect("equal")
    left.axis("off")
    left.set_title("stripes aligned by the shortest path\n(line width ∝ d_ij / local distance)",
                   fontsize=9)

    heatmap = right.imshow(d, cmap=COLOURMAP, norm=scale, interpolation="nearest")
    if max(rows, cols) <= ANNOTATE_UP_TO:
        for i in range(rows):
            for j in range(cols):
                # Above the centre, where the path's markers sit.
                right.text(j, i - 0.22, f"{d[i, j]:.3f}", ha="center", va="center",
                           fontsize=7 if max(rows, cols) > 8 else 8,
                           color="black" if scale(d[i, j]) > 0.6 else "white")
    path_i, path_j = zip(*cells)
    right.plot(path_j, path_i, color="red", lw=2.0, marker="o", ms=5)
    right.set_xticks(range(cols))
    right.set_yticks(range(rows))
    right.set_xlabel("gallery stripe j")
    right.set_ylabel("query stripe i")
    right.set_title(f"element distances d_ij, shortest path (length {total:.4f})", fontsize=9)
    figure.colorbar(heatmap, ax=right, label="d_ij = tanh(||f_i - g_j|| / 2)", shrink=0.85)
    figures.save(figure, path)


def visualize() -> list[str]:
    if not os.path.isdir(FLAGS.workdir):
        raise workdir_lib.WorkdirError(f"{FLAGS.workdir}: no such workdir")
    config = workdir_lib.read_model_config(FLAGS.workdir)
    data_dir = FLAGS.data_dir or config.get("data_dir")
    if not data_dir:
        raise DatasetError(f"{FLAGS.workdir}/{workdir_lib.MODEL_FILE} names no data_dir; pass "
                           "--data_dir")
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such data_dir (a tools.build_tfrecords output)")
    manifest = read_manifest(data_dir)
    pair = (("query", FLAGS.query_split, FLAGS.query), ("gallery", FLAGS.gallery_split,
                                                        FLAGS.gallery))
    for flag, split, index in pair:
        checked_index(manifest, data_dir, split, index, flag)
    atomic.check_target(FLAGS.output, True, [FLAGS.workdir, data_dir, *input_files(
        FLAGS.workdir, FLAGS.which, data_dir, manifest, [split for _, split, _ in pair])])

    model = workdir_lib.load_student(FLAGS.workdir, FLAGS.which, FLAGS.student)
    if not model.local_branch:
        raise workdir_lib.WorkdirError(
            f"{FLAGS.workdir}: student {FLAGS.student} has no local branch (a baseline, trained "
            "with --local_triplet_weight=0): no stripes to align")
    height, width = model.image_shape[:2]
    records = [read_image(data_dir, manifest, split, index, height, width)
               for _, split, index in pair]
    out = extract.keras_model_fn(model)(tf.constant(np.stack([r["image"] for r in records])))
    global_, local = (np.asarray(out[key], np.float32) for key in ("global", "local"))

    d = element_distances(*matching.l2_normalize(local))
    local_distance, cells = shortest_path(d)
    global_distance = float(matching.global_distances(global_[:1], global_[1:],
                                                      FLAGS.normalize)[0, 0])
    names = [f"{split} {index} pid {r['pid']} cam {r['camid']}"
             for (_, split, index), r in zip(pair, records)]
    same = "same identity" if records[0]["pid"] == records[1]["pid"] else "different identities"
    title = (f"{names[0]}  vs  {names[1]}  ({same})\nlocal distance {local_distance:.4f}, "
             f"global distance {global_distance:.4f}"
             + ("" if FLAGS.normalize else " (global features not normalised)"))
    captions = [f"{split} {index}\n{os.path.basename(r['path'].decode())}"
                for (_, split, index), r in zip(pair, records)]
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    draw(FLAGS.output, [r["image"] for r in records], captions, d, cells, title)
    return [f"wrote {FLAGS.output} ({names[0]}, {names[1]}, local distance "
            f"{local_distance:.6f}, global distance {global_distance:.6f})"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(visualize, errors=(DatasetError, workdir_lib.WorkdirError))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "query", "gallery", "output"])
    app.run(main, flags_parser=parse_flags)
