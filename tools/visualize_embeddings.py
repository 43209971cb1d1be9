"""python -m tools.visualize_embeddings --features=runs/demo/features.npz --output_dir=runs/demo/embeddings

Draws a 2-D t-SNE (van der Maaten & Hinton 2008; scikit-learn) of a features file's global
features, coloured by identity: the training identities beside the test identities, as the
survey's proposal (Fig. 1) shows them. A model that clusters the identities it was trained on
much better than new ones has learnt those identities more than a way to tell people apart.

The train panel needs the "train" split in the file (`tf_reid.evaluate --save_features=F.npz
--save_train`); without it only the test panel (query and gallery images together; query
images drawn with a black edge) is drawn, and the command says so. Each panel shows
--num_identities identities spread evenly over the split's sorted identities, at most
--max_per_identity images each (the first ones in dataset order), so a picture stays readable
and t-SNE stays quick. Beside the picture it prints, per panel, how often an image's nearest
other image is of the same identity, in the feature space (Euclidean, L2-normalised with
--normalize as in evaluation) and in the 2-D map: a number to compare where the colours only
suggest.

  embeddings.png  one t-SNE panel per split group (train, test), one colour per identity.

No TensorFlow: the features file is read with NumPy.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from absl import app, flags

from tf_reid.evaluation import features_file, figures
from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.evaluation.matching import l2_normalize
from tfrecords_builder import atomic
from tools.cli import FlagError, parse_flags, run_reporting

FLAGS = flags.FLAGS
TRAIN = "train"
OUTPUT_FILE = "embeddings.png"
EXACT_TSNE_POINTS = 1000  # O(N^2) memory: 8 MB of float64 at this size


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("features", None, "Features file written by tf_reid.evaluate "
                        "--save_features (with --save_train for the train panel).")
    flags.DEFINE_string("output_dir", None, f"Folder for {OUTPUT_FILE} (created).")
    flags.DEFINE_integer("num_identities", 20, "Identities shown per panel.", lower_bound=2)
    flags.DEFINE_integer("max_per_identity", 20, "Most images shown per identity.",
                         lower_bound=1)
    flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity (capped below a third of the "
                       "points, as t-SNE needs).", lower_bound=1.0)
    flags.DEFINE_integer("seed", 0, "t-SNE random state.", lower_bound=0)
    flags.DEFINE_bool("normalize", True, "L2-normalise the global features first.")


def pick_identities(pids: np.ndarray, num_identities: int, max_per_identity: int) -> np.ndarray:
    """Indices of the images to show: `num_identities` identities spread evenly over the sorted
    identities that have at least two images, the first `max_per_identity` images of each.

    Args:
      pids: [N] identities.
      num_identities: identities wanted (all of them if there are fewer).
      max_per_identity: most images per identity.

    Returns:
      [M] int64 indices into pids, ascending.
    """
    candidates, counts = np.unique(pids, return_counts=True)
    candidates = candidates[counts >= 2]  # a lone image has nothing to cluster with
    count = min(num_identities, len(candidates))
    chosen = candidates[np.unique(np.round(np.linspace(0, len(candidates) - 1, count))
                                  .astype(np.int64))] if count else candidates[:0]
    keep = [np.flatnonzero(pids == pid)[:max_per_identity] for pid in chosen]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def nearest_neighbour_agreement(points: np.ndarray, pids: np.ndarray) -> float:
    """Fraction of points whose nearest other point (Euclidean; ties to the lower index) has
    the same identity.

    Args:
      points: [N, D] features or map coordinates, N >= 2.
      pids: [N] identities.
    """
    squared = np.sum(points * points, axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * points @ points.T
    np.fill_diagonal(distances, np.inf)
    return float(np.mean(pids[np.argmin(distances, axis=1)] == pids))


def tsne(points: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE map [N, 2] of [N, D] points (PCA initialisation; perplexity capped at
    (N - 1) / 3, below which scikit-learn's neighbourhoods fit)."""
    from sklearn.manifold import TSNE  # imported here: seconds of start-up, only when drawing

    capped = max(1.0, min(perplexity, (len(points) - 1) / 3))
    # Barnes-Hut pays off only on large sets: on a few hundred points exact t-SNE is as fast,
    # and on a few dozen Barnes-Hut took seconds where exact takes a fraction of one.
    method = "exact" if len(points) <= EXACT_TSNE_POINTS else "barnes_hut"
    return TSNE(n_components=2, perplexity=capped, init="pca", random_state=seed, method=method,
                n_jobs=1).fit_transform(points.astype(np.float64))


def identity_colours(pids: np.ndarray) -> dict[int, tuple[float, ...]]:
    """One RGBA colour per identity of `pids` (tab20 for up to 20, else spread over hsv)."""
    from matplotlib import colormaps

    unique = np.unique(pids)
    palette = colormaps["tab20"] if len(unique) <= 20 else colormaps["hsv"]
    return {int(pid): palette(i / max(len(unique), 20) if len(unique) > 20 else i)
            for i, pid in enumerate(unique)}


def draw(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> None:
    """Writes the picture: per panel title, ([N, 2] map, [N] pids, [N] bool edge marks)."""
    figure, axes = figures.new_figure(5.0 * len(panels), 5.2, columns=len(panels))
    for ax, (title, (coords, pids, marked)) in zip(np.atleast_1d(axes), panels.items()):
        colours = identity_colours(pids)
        ax.scatter(coords[:, 0], coords[:, 1], s=18, c=[colours[int(p)] for p in pids],
                   edgecolors=np.where(marked[:, None], [[0, 0, 0, 1]], [[0, 0, 0, 0]]),
                   linewidths=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    figures.save(figure, path)


def query_and_gallery(query: SplitFeatures, gallery: SplitFeatures
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query and gallery as one split: ([N, D] features, [N] pids, [N] bool "is a query")."""
    return (np.concatenate([query.global_, gallery.global_]),
            np.concatenate([query.pids, gallery.pids]),
            np.concatenate([np.ones(len(query), bool), np.zeros(len(gallery), bool)]))


def visualize() -> list[str]:
    atomic.check_target(FLAGS.output_dir, True, [FLAGS.features])
    metadata = features_file.load_metadata(FLAGS.features)
    query, gallery = (features_file.load(FLAGS.features, split, with_local=False)
                      for split in features_file.SPLITS)
    groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    lines = []
    if TRAIN in metadata.get("splits", {}):
        train = features_file.load(FLAGS.features, TRAIN, with_local=False)
        groups[TRAIN] = (train.global_, train.pids, np.zeros(len(train), bool))
    else:
        lines.append(f"{FLAGS.features} has no train split (tf_reid.evaluate --save_features "
                     "--save_train): drawing the test split only")
    groups["test"] = query_and_gallery(query, gallery)
    panels = {}
    for name, (feats, pids, marked) in groups.items():
        keep = pick_identities(pids, FLAGS.num_identities, FLAGS.max_per_identity)
        if len(keep) < 4:
            raise FlagError(f"--features: the {name} split of {FLAGS.features} has "
                            f"{len(keep)} image(s) of identities with two or more images; "
                            "t-SNE needs at least 4")
        points = l2_normalize(feats[keep]) if FLAGS.normalize else feats[keep]
        if not np.isfinite(points).all():
            raise FlagError(f"--features: the {name} split of {FLAGS.features} holds "
                            "non-finite features")
        coords = tsne(points, FLAGS.perplexity, FLAGS.seed)
        identities = len(np.unique(pids[keep]))
        title = f"{name}: {identities} identities, {len(keep)} images"
        if marked[keep].any():
            title += "\n(black edge: query)"
        panels[title] = (coords, pids[keep], marked[keep])
        lines.append(f"{name}: {identities} identities, {len(keep)} images; nearest other "
                     f"image of the same identity: "
                     f"{100 * nearest_neighbour_agreement(points, pids[keep]):.1f}% in feature "
                     f"space, {100 * nearest_neighbour_agreement(coords, pids[keep]):.1f}% in "
                     "the t-SNE map")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, OUTPUT_FILE)
    draw(panels, path)
    return lines + [f"wrote {path}"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(visualize, errors=(features_file.FeaturesFileError,))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["features", "output_dir"])
    app.run(main, flags_parser=parse_flags)
