"""python -m bench.feature_choice --workdirs=runs/bench_cuhk03_e58/aligned-s0-val50-s0,... [--data_dir=data/bench_cuhk03/val50-s0]

Which global feature to evaluate and serve, chosen on validation identities, never on the test
split (issue 21): for each workdir trained on the validation variant of `bench.cuhk03_subset`
(`--split=val`), its last student 0 is evaluated on the held-out query/gallery of that variant with
every combination of the feature (`tf_reid.evaluation.feature_choice.FEATURES`: pre-BN global or
post-BN-neck), L2 normalisation before the Euclidean distance, and flip averaging; global distance,
no re-ranking. Prints rank-1 / mAP per workdir and their mean per combination, best mean mAP first,
and writes <runs_dir>/feature_choice.json.

A workdir whose recorded training data is not --data_dir is refused: its identities would not
be held out of training.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import itertools  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.common import SETTINGS_FILE  # noqa: E402
from tf_reid.evaluation import extract, protocols, report  # noqa: E402
from tf_reid.evaluation.feature_choice import FEATURES  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder.manifest import read_manifest  # noqa: E402
from tools.cli import warnings_only_unless_verbose  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "bench.cuhk03_subset --split=val workdirs.")
flags.DEFINE_string("data_dir", os.path.join(REPO, "data", "bench_cuhk03", "val50-s0"),
                    "The validation variant they were trained on.")
flags.DEFINE_string("output", os.path.join(REPO, "runs", "bench_cuhk03_e58", "feature_choice.json"),
                    "Where the table goes as JSON.")
flags.DEFINE_integer("batch_size", 128, "Images per batch of feature extraction.")
flags.DEFINE_bool("progress", True, "Progress bars.")
flags.mark_flag_as_required("workdirs")


def combinations() -> list[tuple[str, bool, bool]]:
    """(feature, normalize, flip) for every feature of `FEATURES`."""
    return list(itertools.product(FEATURES, (True, False), (False, True)))


def evaluate_workdir(workdir: str, data_dir: str) -> dict[tuple[str, bool, bool], dict]:
    """{(feature, normalize, flip): global-distance metrics} of the workdir's last student 0."""
    settings = workdir_lib.read_json(os.path.join(workdir, SETTINGS_FILE))
    if os.path.abspath(settings["data_dir"]) != os.path.abspath(data_dir):
        raise workdir_lib.WorkdirError(
            f"{workdir}: trained on {settings['data_dir']}, not on --data_dir {data_dir}")
    keras.backend.clear_session()
    model = workdir_lib.load_student(workdir, "last")
    height, width = model.image_shape[:2]
    single_gallery_shot = protocols.single_gallery_shot(read_manifest(data_dir))
    results = {}
    for feature in FEATURES:
        model_fn = extract.keras_model_fn(model, feature)
        for flip in (False, True):
            query, gallery = (extract.extract_split(model_fn, data_dir, split, height, width,
                                                    FLAGS.batch_size, flip=flip,
                                                    with_local=False, progress=FLAGS.progress)
                              for split in ("query", "gallery"))
            for normalize in (True, False):
                results[feature, normalize, flip] = report.evaluate_features(
                    query, gallery, normalize=normalize,
                    single_gallery_shot=single_gallery_shot)["global"]
    return results


def table(names: list[str], runs: list[dict]) -> tuple[list[str], list[dict[str, Any]]]:
    """Printable lines (best mean mAP first) and the rows as JSON-ready dicts."""
    rows = []
    for combo in combinations():
        r1 = np.array([run[combo]["rank1"] for run in runs])
        ap = np.array([run[combo]["mAP"] for run in runs])
        rows.append({"feature": combo[0], "normalize": combo[1], "flip": combo[2],
                     "rank1": r1.tolist(), "mAP": ap.tolist(),
                     "mean_rank1": float(r1.mean()), "mean_mAP": float(ap.mean())})
    rows.sort(key=lambda r: (-r["mean_mAP"], -r["mean_rank1"]))
    head = f"{'feature':8} {'L2':>3} {'flip':>4}" + "".join(
        f" {n[:22]:>22}" for n in names) + f" {'mean R1 / mAP':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "".join(f" {f'{100 * a:.1f} / {100 * b:.1f}':>22}"
                        for a, b in zip(r["rank1"], r["mAP"]))
        lines.append(f"{r['feature']:8} {'yes' if r['normalize'] else 'no':>3} "
                     f"{'yes' if r['flip'] else 'no':>4}{cells} "
                     f"{100 * r['mean_rank1']:6.1f} / {100 * r['mean_mAP']:5.1f}")
    return lines, rows


def main(argv: list[str]) -> int:
    del argv
    warnings_only_unless_verbose()
    runs = []
    try:
        for workdir in FLAGS.workdirs:
            runs.append(evaluate_workdir(workdir, FLAGS.data_dir))
    except (workdir_lib.WorkdirError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    names = [os.path.basename(os.path.normpath(w)) for w in FLAGS.workdirs]
    lines, rows = table(names, runs)
    manifest = read_manifest(FLAGS.data_dir)["splits"]
    print(f"validation {os.path.relpath(FLAGS.data_dir, REPO)}: query "
          f"{manifest['query']['images']} / gallery {manifest['gallery']['images']}; global "
          "distance, no re-ranking, last epoch, student 0; rank-1 / mAP in %")
    for line in lines:
        print(line)
    workdir_lib.write_json(FLAGS.output, {"data_dir": os.path.relpath(FLAGS.data_dir, REPO),
                                          "workdirs": FLAGS.workdirs, "rows": rows})
    print(f"wrote {os.path.relpath(FLAGS.output, REPO)}")
    return 0


if __name__ == "__main__":
    app.run(main)
