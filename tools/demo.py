"""python -m tools.demo [--root .] [--python .venv/bin/python]   (what `make demo` runs)

The whole system once, end to end, on the embedded synthetic pedestrians, on the CPU:
generate the images -> identity-sharded TFRecords -> train a small AlignedReID
(configs/demo.flags) -> evaluate (rank-1/5/10, mAP; global and global + local, each with and
without re-ranking; the verification view) -> export the SavedModel -> embed the gallery and one
query through it -> build a gallery index and search the query in it -> draw the ranked lists
and the CMC curve, a t-SNE of train vs test features, and how AlignedReID aligns a query with
its true match, then a summary: the results next to the chance level of the same split, and
where everything is. Every stage is the project's own command line, printed before it runs, so a newcomer can
run each by hand. A stage whose output exists is reused (outputs are written atomically, so
an existing one is complete); training always runs with --resume, so a killed demo continues
from its last checkpoint and a finished one is not retrained. `make clean-demo` starts over.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import dataclasses  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("root", ".",
                        "Repository root (configs/ is read from there, outputs go there).")
    flags.DEFINE_string("python", sys.executable, "Python that runs each stage's command line.")


DATA = "data/demo"
IMAGES = f"{DATA}/images"
TFRECORDS = f"{DATA}/tfrecords"
RUN = "runs/demo"  # the workdir of configs/demo.flags
FEATURES = f"{RUN}/features.npz"
EVAL = f"{RUN}/eval.json"
VERIFICATION = f"{RUN}/eval_verification.png"
SAVED_MODEL = f"{RUN}/exports/tf_reid/1"
GALLERY = f"{RUN}/gallery_embeddings.npz"
QUERY = f"{RUN}/query_embedding.npz"
INDEX = f"{RUN}/index"
SEARCH = f"{RUN}/search.json"
RANKS = f"{RUN}/ranks"
EMBEDDINGS = f"{RUN}/embeddings"
ALIGNMENT = f"{RUN}/alignment.png"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the demo: a `python -m` command line and the outputs that make it done.

    `args` is a function so that a stage may depend on what an earlier one wrote (the query
    image is picked once the images exist). No outputs: the stage always runs.
    """

    title: str
    module: str
    args: Callable[[], Sequence[str]]
    outputs: tuple[str, ...] = ()


def first_query() -> str:
    """The first query image of the synthetic set (sorted by name: lowest pid, camera 1)."""
    return sorted(glob.glob(f"{IMAGES}/query/*"))[0]


def true_match() -> tuple[int, int]:
    """(query 0, its first gallery image of the same identity from another camera): the pair
    whose alignment the demo draws."""
    from tf_reid.evaluation import features_file

    query, gallery = (features_file.load(FEATURES, split, with_local=False)
                      for split in features_file.SPLITS)
    matches = (gallery.pids == query.pids[0]) & (gallery.camids != query.camids[0])
    return 0, int(matches.argmax())


STAGES = (
    Stage("generate the synthetic pedestrians", "tools.generate_synthetic",
          lambda: ["--output_dir", IMAGES], (IMAGES,)),
    Stage("convert them to identity-sharded TFRecords", "tools.build_tfrecords",
          lambda: ["--dataset", "synthetic", "--data_dir", IMAGES, "--output_dir", TFRECORDS,
                   "--records_per_shard", "500"], (f"{TFRECORDS}/manifest.json",)),
    Stage("train AlignedReID on the CPU (a killed run resumes; a finished one is kept)",
          "tf_reid.train", lambda: ["--flagfile=configs/demo.flags", "--resume"]),
    Stage("evaluate: global and global + local distances, with and without re-ranking; "
          "the verification view", "tf_reid.evaluate",
          lambda: ["--workdir", RUN, "--local", "--rerank", "--verification", "--save_features",
                   FEATURES, "--save_train"], (EVAL, FEATURES, VERIFICATION)),
    Stage("export the SavedModel (TensorFlow Serving layout)", "tools.export_saved_model",
          lambda: ["--workdir", RUN, "--export_dir", os.path.dirname(os.path.dirname(SAVED_MODEL)),
                   "--model_name", "tf_reid", "--version", "1"], (SAVED_MODEL,)),
    Stage("embed the gallery images through the SavedModel", "tools.embed",
          lambda: ["--saved_model", SAVED_MODEL, "--images", f"{IMAGES}/bounding_box_test/*",
                   "--split", "gallery", "--output", GALLERY], (GALLERY,)),
    Stage("build the gallery index", "tools.build_index",
          lambda: ["--features", GALLERY, "--output", INDEX, "--kind", "exact"], (INDEX,)),
    Stage("embed one query image through the SavedModel", "tools.embed",
          lambda: ["--saved_model", SAVED_MODEL, "--images", first_query(), "--output", QUERY],
          (QUERY,)),
    Stage("search it in the gallery index", "tools.search",
          lambda: ["--index", INDEX, "--queries", QUERY, "--k", "10", "--output", SEARCH],
          (SEARCH,)),
    Stage("draw ranked lists and the CMC curve", "tools.visualize_ranks",
          lambda: ["--features", FEATURES, "--output_dir", RANKS, "--num_queries", "8",
                   "--local"], (f"{RANKS}/ranks.png", f"{RANKS}/cmc.png")),
    Stage("draw a t-SNE of the train and test features", "tools.visualize_embeddings",
          lambda: ["--features", FEATURES, "--output_dir", EMBEDDINGS],
          (f"{EMBEDDINGS}/embeddings.png",)),
    Stage("draw how the first query's stripes align with its true match's",
          "tools.visualize_alignment",
          lambda: ["--workdir", RUN, "--query", str(true_match()[0]), "--gallery",
                   str(true_match()[1]), "--output", ALIGNMENT], (ALIGNMENT,)),
)

ARTEFACTS = (  # (what, where), for the summary
    ("synthetic images", IMAGES),
    ("TFRecords + manifest", TFRECORDS),
    ("training workdir", f"{RUN} (flags.txt, checkpoints/, best/, logs/ for TensorBoard)"),
    ("evaluation", f"{EVAL}, features in {FEATURES}"),
    ("SavedModel", SAVED_MODEL),
    ("gallery index", INDEX),
    ("search result", SEARCH),
    ("ranked lists", f"{RANKS}/ranks.png"),
    ("CMC curve", f"{RANKS}/cmc.png"),
    ("verification", VERIFICATION),
    ("t-SNE, train vs test", f"{EMBEDDINGS}/embeddings.png"),
    ("alignment of a pair", ALIGNMENT),
)


def is_done(stage: Stage) -> bool:
    return bool(stage.outputs) and all(os.path.exists(path) for path in stage.outputs)


def run_stages(stages: Sequence[Stage], python: str) -> list[tuple[str, float, bool]]:
    """Runs each stage not done yet; returns (title, seconds, reused) per stage.

    Raises:
      RuntimeError: a stage's command failed (its own error line is above).
    """
    timings = []
    for number, stage in enumerate(stages, 1):
        command = [python, "-m", stage.module, *stage.args()]
        shown = shlex.join(["python", "-m", stage.module, *command[3:]])
        print(f"\n== {number}/{len(stages)} {stage.title}\n$ {shown}", flush=True)
        if is_done(stage):
            print(f"   reusing {', '.join(stage.outputs)}", flush=True)
            timings.append((stage.title, 0.0, True))
            continue
        start = time.perf_counter()
        status = subprocess.run(command).returncode
        if status:
            raise RuntimeError(f"stage {number} ({stage.title}) failed with exit status "
                               f"{status}; re-run `make demo` to continue from it")
        timings.append((stage.title, time.perf_counter() - start, False))
    return timings


def search_lines(search_file: str, shown: int = 5) -> list[str]:
    """The searched query's top hits, marked by whether they are the query's identity."""
    from tf_reid.training.workdir import read_json

    result = read_json(search_file)["results"][0]
    lines = [f"query {result['path']} (pid {result['pid']}), top {shown} of "
             f"{len(result['hits'])}:"]
    for hit in result["hits"][:shown]:
        mark = "same person" if hit["pid"] == result["pid"] else "other person"
        lines.append(f"  {hit['rank']:2d}. {hit['path']}  distance {hit['distance']:.3f}  {mark}")
    return lines


def summary(timings: Sequence[tuple[str, float, bool]]) -> list[str]:
    from tf_reid.evaluation import features_file, matching, report
    from tf_reid.evaluation.metrics import chance_level
    from tf_reid.training.workdir import read_json

    metrics = read_json(EVAL)["metrics"]
    query, gallery = (features_file.load(FEATURES, split, with_local=False)
                      for split in features_file.SPLITS)
    chance = chance_level(query.pids, gallery.pids, query.camids, gallery.camids)
    lines = ["", "== summary", "stage times: " + ", ".join(
        f"{i}: {'reused' if reused else f'{seconds:.0f} s'}"
        for i, (_, seconds, reused) in enumerate(timings, 1)),
        f"results on the synthetic test split ({len(query.pids)} queries, "
        f"{len(gallery.pids)} gallery images, in %):",
        *report.metrics_table({name: metrics[name] for name in matching.VARIANTS
                               if name in metrics}),
        f"chance level (a random ranking, same split and protocol): rank-1 "
        f"{100 * chance['rank1']:.2f}%, mAP {100 * chance['mAP']:.2f}%", ""]
    lines += search_lines(SEARCH)
    lines += ["", "artefacts:"] + [f"  {what:>22}: {where}" for what, where in ARTEFACTS]
    return lines


def main(argv: list[str]) -> int:
    del argv
    os.chdir(FLAGS.root)
    start = time.perf_counter()
    try:
        timings = run_stages(STAGES, FLAGS.python)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(summary(timings)))
    print(f"demo done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    define_flags()
    from tools.cli import parse_flags

    app.run(main, flags_parser=parse_flags)
