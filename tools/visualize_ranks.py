"""python -m tools.visualize_ranks --features=runs/smoke/features.npz --output_dir=runs/smoke/ranks --num_queries=8 --top_k=10

Draws what the retrieval looks like, from features saved by `tf_reid.evaluate --save_features`:

  ranks.png  one row per query: the query image, then its top-k gallery images in rank order
             (same-pid same-camera junk left out, as in evaluation); green border = same pid,
             red = another pid.
  cmc.png    the CMC curve (matching rate against rank 1..max_rank) of every distance shown,
             under the protocol the features file records (single-gallery-shot for CUHK03
             classic, as `tf_reid.evaluate` scores it; ranks.png still shows the whole gallery).

Images are read back from the TFRecords in --data_dir (default: the data_dir the features were
extracted from). Layout of ranks.png, in pixels, for cells of --cell_height x --cell_width:
each image is framed by a BORDER-wide border and has a LABEL-high caption strip below it;
cells are PAD apart (and PAD from the edges), with GAP more between the query and its ranks, so
the grid is PAD + (1 + top_k) * (cell_width + 2 * BORDER + PAD) + GAP wide and
PAD + rows * (cell_height + 2 * BORDER + LABEL + PAD) high.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import io  # noqa: E402
import os  # noqa: E402
from typing import Any, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from tf_reid.data.tfrecords import shard_files  # noqa: E402
from tf_reid.evaluation import features_file, matching, protocols  # noqa: E402
from tf_reid.evaluation.features_file import SplitFeatures  # noqa: E402
from tfrecords_builder import atomic, features  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import FlagError, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("features", None, "Features file written by tf_reid.evaluate --save_features.")
    flags.DEFINE_string("data_dir", None, "TFRecords folder (default: the features' data_dir).")
    flags.DEFINE_string("output_dir", None, "Folder for ranks.png and cmc.png (created).")
    flags.DEFINE_list("queries", None, "Query indices to show, e.g. 0,5,9.")
    flags.DEFINE_integer("num_queries", 8, "Without --queries: this many, evenly spaced.",
                         lower_bound=1)
    flags.DEFINE_integer("top_k", 10, "Gallery images per query.", lower_bound=1)
    flags.DEFINE_bool("local", False, "Rank by global + local distance instead of global.")
    flags.DEFINE_bool("rerank", False, "Rank by the k-reciprocal re-ranked distance.")
    flags.DEFINE_bool("normalize", True, "L2-normalise the global features before distances.")
    flags.DEFINE_integer("max_rank", 50, "Last rank of the CMC curve.", lower_bound=1)
    flags.DEFINE_integer("cell_height", 128, "Height of each image in ranks.png.", lower_bound=8)
    flags.DEFINE_integer("cell_width", 64, "Width of each image in ranks.png.", lower_bound=8)


BORDER, LABEL, PAD, GAP = 4, 14, 4, 12
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (120, 120, 120)
MATCH, MISMATCH, QUERY = (0, 170, 0), (220, 0, 0), (40, 40, 40)
CURVES = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189))
# cmc.png: size and the plot area's margins (left, top, right, bottom).
CMC_SIZE, CMC_MARGINS = (480, 360), (60, 30, 20, 50)


def query_indices(num_query: int, queries: Sequence[str] | None, num_queries: int) -> list[int]:
    """The queries to draw: the listed indices, or `num_queries` spread evenly over all."""
    if queries:
        indices = [int(q) for q in queries]
        bad = [i for i in indices if not 0 <= i < num_query]
        if bad:
            raise FlagError(f"--queries {bad} out of range: there are {num_query} queries")
        return indices
    count = min(num_queries, num_query)
    return sorted({int(round(i)) for i in np.linspace(0, num_query - 1, count)})


def ranked_gallery(dist: np.ndarray, q_pid: int, q_camid: int, g_pids: np.ndarray,
                   g_camids: np.ndarray, top_k: int) -> np.ndarray:
    """Gallery indices of one query's top-k, junk (its pid in its camera) left out.

    Args:
      dist: [G] distances of the query to the gallery.
      q_pid, q_camid: the query's identity and camera.
      g_pids, g_camids: [G] gallery identities and cameras.
      top_k: how many to return (fewer if the gallery runs out).

    Returns:
      [<= top_k] int indices, nearest first; ties by gallery index, as in `evaluate_rank`.
    """
    order = np.argsort(dist, kind="stable")
    junk = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    return order[~junk][:top_k]


def read_images(data_dir: str, split: str, paths: set[str]) -> dict[str, bytes]:
    """Encoded bytes of the records of `split` whose path is in `paths`, read in one pass.

    Raises:
      DatasetError: a path is not in the split (features of another data_dir).
    """
    spec = {k: features.FEATURE_SPEC[k] for k in (features.PATH, features.IMAGE)}
    found = {}
    dataset = tf.data.TFRecordDataset(shard_files(data_dir, split)).map(
        lambda s: tf.io.parse_single_example(s, spec))
    for record in dataset.as_numpy_iterator():
        path = record[features.PATH].decode()
        if path in paths:
            found[path] = record[features.IMAGE]
    missing = sorted(paths - set(found))
    if missing:
        raise DatasetError(f"{data_dir}: {len(missing)} image(s) of the features are not in its "
                           f"'{split}' split, e.g. {missing[0]}")
    return found


def grid_size(rows: int, top_k: int, cell_height: int, cell_width: int) -> tuple[int, int]:
    """(width, height) of ranks.png."""
    return (PAD + (1 + top_k) * (cell_width + 2 * BORDER + PAD) + GAP,
            PAD + rows * (cell_height + 2 * BORDER + LABEL + PAD))


def cell_origin(row: int, column: int, cell_height: int, cell_width: int) -> tuple[int, int]:
    """Top-left (x, y) of the border of a cell; column 0 is the query, 1..k its ranks."""
    x = PAD + column * (cell_width + 2 * BORDER + PAD) + (GAP if column else 0)
    return x, PAD + row * (cell_height + 2 * BORDER + LABEL + PAD)


def draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, origin: tuple[int, int],
              image: bytes, colour: tuple[int, int, int], caption: str, cell_height: int,
              cell_width: int, font: ImageFont.ImageFont) -> None:
    x, y = origin
    draw.rectangle([x, y, x + cell_width + 2 * BORDER - 1, y + cell_height + 2 * BORDER - 1],
                   fill=colour)
    picture = Image.open(io.BytesIO(image)).convert("RGB").resize((cell_width, cell_height),
                                                                  Image.BILINEAR)
    canvas.paste(picture, (x + BORDER, y + BORDER))
    draw.text((x, y + cell_height + 2 * BORDER + 1), caption, fill=BLACK, font=font)


def ranks_grid(rows: Sequence[tuple[int, np.ndarray]], query: SplitFeatures,
               gallery: SplitFeatures, query_images: Mapping[str, bytes],
               gallery_images: Mapping[str, bytes], top_k: int, cell_height: int,
               cell_width: int) -> Image.Image:
    """The ranks.png picture: per row (query index, its ranked gallery indices).

    `query_images` and `gallery_images` map each shown item's path to its encoded bytes.
    """
    canvas = Image.new("RGB", grid_size(len(rows), top_k, cell_height, cell_width), WHITE)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (q, ranked) in enumerate(rows):
        draw_cell(canvas, draw, cell_origin(r, 0, cell_height, cell_width),
                  query_images[query.paths[q]], QUERY, f"q{q} id{query.pids[q]}", cell_height,
                  cell_width, font)
        for c, g in enumerate(ranked, start=1):
            colour = MATCH if gallery.pids[g] == query.pids[q] else MISMATCH
            draw_cell(canvas, draw, cell_origin(r, c, cell_height, cell_width),
                      gallery_images[gallery.paths[g]], colour, f"{c}: id{gallery.pids[g]}",
                      cell_height, cell_width, font)
    return canvas


def cmc_point(rank: int, rate: float, max_rank: int) -> tuple[int, int]:
    """Pixel (x, y) of (rank in 1..max_rank, matching rate in [0, 1]) in cmc.png."""
    (width, height), (left, top, right, bottom) = CMC_SIZE, CMC_MARGINS
    x = left + (rank - 1) / max(max_rank - 1, 1) * (width - left - right - 1)
    y = height - bottom - 1 - rate * (height - top - bottom - 1)
    return int(round(x)), int(round(y))


def cmc_plot(curves: Mapping[str, np.ndarray], max_rank: int) -> Image.Image:
    """The cmc.png picture: each [max_rank] CMC curve (fractions), axes, ticks and a legend."""
    canvas = Image.new("RGB", CMC_SIZE, WHITE)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    origin, x_end, y_end = cmc_point(1, 0, max_rank), cmc_point(max_rank, 0, max_rank), \
        cmc_point(1, 1, max_rank)
    for percent in range(0, 101, 20):
        x, y = cmc_point(1, percent / 100, max_rank)
        draw.line([x, y, x_end[0], y], fill=(225, 225, 225))
        draw.line([x - 4, y, x, y], fill=BLACK)
        draw.text((x - 8, y), f"{percent}", fill=BLACK, font=font, anchor="rm")
    ticks = sorted({1, max_rank, *range(10, max_rank, 10)})
    for rank in ticks:
        x, y = cmc_point(rank, 0, max_rank)
        draw.line([x, y, x, y + 4], fill=BLACK)
        draw.text((x, y + 6), str(rank), fill=BLACK, font=font, anchor="mt")
    draw.line([origin, x_end], fill=BLACK)
    draw.line([origin, y_end], fill=BLACK)
    width, height = CMC_SIZE
    draw.text(((origin[0] + x_end[0]) // 2, height - 8), "rank", fill=BLACK, font=font,
              anchor="mb")
    label = Image.new("RGB", (160, 14), WHITE)
    ImageDraw.Draw(label).text((80, 7), "matching rate (%)", fill=BLACK, font=font, anchor="mm")
    label = label.rotate(90, expand=True)
    canvas.paste(label, (4, (origin[1] + y_end[1]) // 2 - label.height // 2))
    draw.text((width // 2, 6), "CMC", fill=BLACK, font=font, anchor="mt")
    for i, (name, cmc) in enumerate(curves.items()):
        colour = CURVES[i % len(CURVES)]
        points = [cmc_point(r + 1, float(cmc[r]), max_rank) for r in range(max_rank)]
        draw.line(points, fill=colour, width=2)
        for x, y in points[:1]:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        legend_y = origin[1] - 16 * (len(curves) - i)
        draw.line([x_end[0] - 150, legend_y, x_end[0] - 130, legend_y], fill=colour, width=2)
        draw.text((x_end[0] - 125, legend_y), f"{name}  rank-1 {100 * cmc[0]:.1f}%", fill=BLACK,
                  font=font, anchor="lm")
    return canvas


def cmc_curves(distances: Mapping[str, np.ndarray], query: SplitFeatures,
               gallery: SplitFeatures, max_rank: int, metadata: Mapping[str, Any]
               ) -> dict[str, np.ndarray]:
    """Each [Q, G] distance's CMC curve [max_rank] under the protocol `metadata` (a features
    file's) records: single-gallery-shot when it has its settings, else multi-shot."""
    single_gallery_shot = metadata.get(protocols.SINGLE_GALLERY_SHOT_KEY)
    return {name: protocols.score(d, query, gallery, max_rank, single_gallery_shot)["cmc"]
            for name, d in distances.items()}


def save_png(picture: Image.Image, path: str) -> None:
    """Writes `picture` to `path` atomically (a reader never sees half a PNG)."""
    with atomic.file(path, suffix=".png") as partial:
        picture.save(partial)


def visualize() -> list[str]:
    if FLAGS.top_k < 1 or FLAGS.num_queries < 1 or FLAGS.max_rank < 1:
        raise FlagError("--top_k, --num_queries and --max_rank must be positive")
    atomic.check_target(FLAGS.output_dir, True, [FLAGS.features])
    query, gallery = (features_file.load(FLAGS.features, split) for split in features_file.SPLITS)
    metadata = features_file.load_metadata(FLAGS.features)
    data_dir = FLAGS.data_dir or metadata.get("data_dir")
    if not data_dir:
        raise DatasetError(f"{FLAGS.features}: names no data_dir; pass --data_dir")
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such data_dir (a tools.build_tfrecords output)")
    if FLAGS.local and query.local is None:
        raise FlagError(f"--local: {FLAGS.features} holds no local features")
    distances = matching.distances(query, gallery,
                                   ("global", "global+local") if FLAGS.local else ("global",),
                                   rerank=FLAGS.rerank, normalize=FLAGS.normalize)
    name = ("global+local" if FLAGS.local else "global") + (matching.RERANK if FLAGS.rerank else "")
    rows = [(q, ranked_gallery(distances[name][q], query.pids[q], query.camids[q], gallery.pids,
                               gallery.camids, FLAGS.top_k))
            for q in query_indices(len(query), FLAGS.queries, FLAGS.num_queries)]
    splits = metadata.get("splits", {"query": "query", "gallery": "gallery"})
    query_images = read_images(data_dir, splits["query"], {query.paths[q] for q, _ in rows})
    gallery_images = read_images(data_dir, splits["gallery"],
                                 {gallery.paths[g] for _, ranked in rows for g in ranked})
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    ranks_path = os.path.join(FLAGS.output_dir, "ranks.png")
    save_png(ranks_grid(rows, query, gallery, query_images, gallery_images, FLAGS.top_k,
                        FLAGS.cell_height, FLAGS.cell_width), ranks_path)
    curves = cmc_curves(distances, query, gallery, FLAGS.max_rank, metadata)
    cmc_path = os.path.join(FLAGS.output_dir, "cmc.png")
    save_png(cmc_plot(curves, FLAGS.max_rank), cmc_path)
    rank1 = ", ".join(f"{n} rank-1 {100 * c[0]:.1f}%" for n, c in curves.items())
    return [f"wrote {ranks_path} ({len(rows)} queries x top-{FLAGS.top_k}, ranked by {name})",
            f"wrote {cmc_path} ({rank1})"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(visualize, errors=(DatasetError, features_file.FeaturesFileError))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["features", "output_dir"])
    app.run(main, flags_parser=parse_flags)
