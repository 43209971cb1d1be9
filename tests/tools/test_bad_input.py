"""Every command line over its bad inputs: one `error:` line naming the culprit, nothing lost.

Each case is a real command line (run as `python -m`, forked from one interpreter by
`tests.tools.forked_commands`) over a world of real outputs: source images, TFRecords, a
workdir, a SavedModel, features files and an index, plus damaged copies. For every case:
exit status 1, stderr exactly one line, starting `error:` and naming the offending path or flag,
no traceback, and the world's files byte-identical afterwards, with nothing added (no
`.partial-*`, `.old-*`, no half-created output).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import REPO, SHARED, write_images
from tests.tf_reid.evaluation.conftest import (HEIGHT, WIDTH, make_tfrecords, make_workdir,
                                               tiny_model)
from tf_reid.evaluation import features_file
from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.index import gallery, inputs
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training.workdir import checkpoint, save_model_config
from tfrecords_builder.manifest import read_manifest

# id: (module, args, text the error line contains). Paths are relative to the world's root
# (the cwd of every case); {root} is its absolute path.
CASES = {
    # 1. --overwrite never deletes an input, nor a folder it did not write.
    "tfrecords_over_its_input": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=synthetic", "--overwrite"],
        "{root}/synthetic: the output is the input"),
    "tfrecords_around_its_input": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=.", "--overwrite"],
        "{root}: the output contains the input"),
    "tfrecords_over_a_user_folder": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=mine", "--overwrite"],
        "{root}/mine: exists and is not an earlier 'tfrecords' output"),
    "tfrecords_exists": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=data"],
        "{root}/data: output already exists (pass --overwrite"),
    "index_around_its_features": (
        "tools.build_index", ["--features=feats/features.npz", "--output=feats", "--overwrite"],
        "feats: the output contains the input feats/features.npz"),
    "index_over_a_user_folder": (
        "tools.build_index", ["--features=feats/features.npz", "--output=mine", "--overwrite"],
        "mine: exists and is not an earlier 'index' output"),
    "synthetic_over_a_user_folder": (
        "tools.generate_synthetic", ["--output_dir=mine", "--overwrite"],
        "mine: exists and is not an earlier 'synthetic' output"),
    "weights_over_their_input": (
        "tools.convert_torch_weights", ["--input=w.weights.h5", "--output=w.weights.h5",
                                        "--overwrite"],
        "w.weights.h5: the output is the input"),
    "weights_from_garbage": (
        "tools.convert_torch_weights", ["--input=garbage.npz", "--output=new.weights.h5"],
        "garbage.npz: not a legacy PyTorch state dict: invalid load key"),
    "search_results_over_the_queries": (
        "tools.search", ["--index=index", "--queries=feats/features.npz",
                         "--output=feats/features.npz"],
        "feats/features.npz: the output is the input"),
    "alignment_over_its_manifest": (
        "tools.visualize_alignment", ["--workdir=workdir", "--query=0", "--gallery=0",
                                      "--output=data/manifest.json"],
        "data/manifest.json: the output is the input {root}/data/manifest.json"),
    "eval_json_over_the_features": (
        "tf_reid.evaluate", ["--features=feats/features.npz", "--output=feats/features.npz"],
        "feats/features.npz: the output is the input"),
    # 2. Numbers out of range, impossible batches: before anything is written.
    "train_negative_rate": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--learning_rate=-0.01"],
        "--learning_rate=-0.01: must be > 0.0"),
    "train_two_bad_numbers": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--learning_rate=-0.01",
                          "--num_instances=0"],
        "--num_instances=0: must be >= 1; --learning_rate=-0.01: must be > 0.0"),
    "train_one_instance": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--num_instances=1"],
        "--num_instances=1: the triplet losses need K >= 2"),
    "train_no_identities": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--num_identities=0"],
        "--num_identities=0: must be >= 1"),
    "train_more_identities_than_data": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--num_identities=3"],
        "--num_identities=3: more than the 2 training identities"),
    "train_more_identities_than_replicas_can_share": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--strategy=mirrored",
                          "--cpu_replicas=2"],
        "--num_identities=2: x 2 replicas = 4 identities per step, more than the 2 training"),
    "train_joint_dataset_given_twice": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--data_dir=data,data/"],
        "data/: given twice (also as data)"),
    "evaluate_verification_on_two_datasets": (
        "tf_reid.evaluate", ["--workdir=workdir", "--data_dir=data,mine", "--verification",
                             "--output=out.json"],
        "--verification: evaluate one dataset at a time (2 given"),
    "train_generated_dir_of_real_images": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--generated_dir=data",
                          "--generated_per_batch=2"],
        "data: its manifest has no 'generated' split"),
    "train_zero_epochs": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--epochs=0"],
        "--epochs=0: must be >= 1"),
    "tfrecords_empty_shards": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=out", "--records_per_shard=0"],
        "--records_per_shard=0"),
    "index_zero_chunk": (
        "tools.build_index", ["--features=feats/features.npz", "--output=out", "--chunk=0"],
        "--chunk=0"),
    "search_zero_k": (
        "tools.search", ["--index=index", "--queries=feats/features.npz", "--k=0"], "--k=0"),
    "embed_zero_batch": (
        "tools.embed", ["--saved_model=exports/reid/1", "--images=synthetic/query/*.png",
                        "--output=out.npz", "--batch_size=0"], "--batch_size=0"),
    "evaluate_local_of_a_baseline": (
        "tf_reid.evaluate", ["--workdir=baseline", "--local"],
        "--local: the model in baseline has no local branch"),
    "evaluate_short_cmc": (
        "tf_reid.evaluate", ["--features=feats/features.npz", "--max_rank=5"], "--max_rank=5"),
    "visualize_zero_top_k": (
        "tools.visualize_ranks", ["--features=feats/features.npz", "--output_dir=out",
                                  "--top_k=0"], "--top_k=0"),
    "alignment_index_out_of_range": (
        "tools.visualize_alignment", ["--workdir=workdir", "--query=8", "--gallery=0",
                                      "--output=out.png"],
        "--query=8 out of range: the 'query' split of {root}/data has 8 images"),
    "alignment_of_a_baseline": (
        "tools.visualize_alignment", ["--workdir=baseline", "--query=0", "--gallery=0",
                                      "--output=out.png"],
        "baseline: student 0 has no local branch"),
    "export_negative_student": (
        "tools.export_saved_model", ["--workdir=workdir", "--export_dir=out", "--student=-1"],
        "--student=-1"),
    "missing_required_flags": (
        "tools.search", [], "--index"),
    "train_in_a_user_folder": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=mine"],
        "mine: not empty; pass --resume"),
    # 3. Search: damaged indexes and bad queries are refused, never answered wrongly.
    "search_no_index": (
        "tools.search", ["--index=none", "--queries=feats/features.npz"],
        "none: no such index folder"),
    "search_nan_queries": (
        "tools.search", ["--index=index", "--queries=nan.npz"],
        "nan.npz: query embeddings row 1 is not finite"),
    "search_flipped_byte": (
        "tools.search", ["--index=flipped", "--queries=feats/features.npz"],
        "flipped/index.faiss: sha256 differs"),
    "search_truncated_index": (
        "tools.search", ["--index=truncated", "--queries=feats/features.npz"],
        "truncated/index.faiss: sha256 differs"),
    # 4. Damaged shards are named before use.
    "train_damaged_shard": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--data_dir=damaged"],
        "damaged/train-00000-of-00001.tfrecord: sha256 differs from the manifest's"),
    "evaluate_damaged_shard": (
        "tf_reid.evaluate", ["--workdir=workdir", "--data_dir=damaged", "--output=out.json"],
        "damaged/query-00000-of-00001.tfrecord: sha256 differs"),
    # 5. A start that fails leaves no workdir behind (here: none existed).
    "train_missing_data": (
        "tf_reid.train", ["--flagfile=smoke.flags", "--workdir=run", "--data_dir=nowhere"],
        "nowhere"),
    # The GAN commands: images instead of TFRecords, a size the DCGAN cannot have, a workdir
    # with nothing to generate from.
    "gan_train_without_manifest": (
        "tools.train_gan", ["--data_dir=synthetic", "--workdir=run"],
        "synthetic/manifest.json: missing file (not a tf-reid TFRecord output)"),
    "gan_train_bad_size": (
        "tools.train_gan", ["--data_dir=data", "--workdir=run", "--height=100", "--width=50"],
        "--height=100 --width=50: a DCGAN size is 4x2 doubled n >= 1 times"),
    "gan_samples_without_checkpoints": (
        "tools.generate_gan_samples", ["--workdir=mine", "--num_images=4", "--output_dir=out"],
        "mine: no checkpoint in checkpoints/"),
    "gan_samples_of_a_reid_workdir": (
        "tools.generate_gan_samples", ["--workdir=workdir", "--num_images=4",
                                       "--output_dir=out"],
        "workdir/gan.json: missing; is workdir a tools.train_gan workdir?"),
    # Converters name the bad file or flag (layouts in `build_world`).
    "market_nothing": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/nothing",
                                  "--output_dir=out"],
        "market/nothing/bounding_box_train: missing (looked in"),
    "market_bad_name": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/bad_name",
                                  "--output_dir=out"],
        "market/bad_name/Market-1501-v15.09.15/query/03_c1.jpg: file name does not parse"),
    "market_bad_image": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/bad_image",
                                  "--output_dir=out"],
        "market/bad_image/Market-1501-v15.09.15/bounding_box_test/0003_c2s1_000601_01.jpg: "
        "image does not decode"),
    "market_empty_query": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/empty_query",
                                  "--output_dir=out"],
        "market/empty_query/Market-1501-v15.09.15: empty split 'query'"),
    "protocol_flag_of_another_dataset": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/nothing",
                                  "--output_dir=out", "--combine_trainval"],
        "--combine_trainval does not apply to --dataset=market1501"),
    "cuhk03_missing_image": (
        "tools.build_tfrecords", ["--dataset=cuhk03", f"--data_dir={SHARED}/data/cuhk03",
                                  "--output_dir=out"],
        # Pair 2 is absent from ../shared; the first listed entry of it is 2_001_1_01.png.
        f"{SHARED}/data/cuhk03/images_labeled/2_001_1_01.png: missing image listed in "
        "cuhk03_new_protocol_config_labeled.mat (pass --allow_missing"),
    "list_pid_not_an_integer": (
        "tools.build_tfrecords", ["--dataset=list", "--data_dir=own", "--list=own/pid.csv",
                                  "--output_dir=out"],
        "own/pid.csv:2: pid 'x' is not an integer"),
    "list_unknown_split": (
        "tools.build_tfrecords", ["--dataset=list", "--data_dir=own", "--list=own/split.csv",
                                  "--output_dir=out"],
        "own/split.csv:1: unknown split 'probe' (expected train, query, gallery)"),
    "list_missing_image": (
        "tools.build_tfrecords", ["--dataset=list", "--data_dir=own", "--list=own/image.csv",
                                  "--output_dir=out"],
        "own/image.csv:2: missing image own/images/2.jpg"),
    "list_inside_its_output": (  # --overwrite would replace the folder holding the list
        "tools.build_tfrecords", ["--dataset=list", "--data_dir=own", "--list=data/own.csv",
                                  "--output_dir=data", "--overwrite"],
        "the output contains the input data/own.csv"),
    "list_flag_of_another_dataset": (
        "tools.build_tfrecords", ["--dataset=market1501", "--data_dir=market/nothing",
                                  "--output_dir=out", "--list=own/pid.csv"],
        "--list does not apply to --dataset=market1501"),
    "viper_without_cam_b": (
        "tools.build_tfrecords", ["--dataset=viper", "--data_dir=viper/no_cam_b",
                                  "--output_dir=out"],
        "viper/no_cam_b/VIPeR/cam_b: missing folder (VIPeR camera B)"),
    "viper_split_index_out_of_range": (
        "tools.build_tfrecords", ["--dataset=viper", "--data_dir=viper/good", "--output_dir=out",
                                  "--split_index=10"],
        "--split_index=10: outside 0..9 (VIPeR has 10 splits)"),
    "ilidsvid_missing_splits_file": (
        "tools.build_tfrecords", ["--dataset=ilidsvid", "--data_dir=ilidsvid",
                                  "--output_dir=out"],
        "ilidsvid/train-test people splits/train_test_splits_ilidsvid.mat: missing file"),
    "evaluate_save_train_without_save_features": (
        "tf_reid.evaluate", ["--features=feats/features.npz", "--save_train"],
        "--save_train needs --save_features"),
    "evaluate_multi_query_without_the_split": (
        "tf_reid.evaluate", ["--features=feats/features.npz", "--multi_query=mean"],
        "--multi_query: feats/features.npz holds no 'multi_query' split (it holds gallery, "
        "query); convert Market-1501 with its gt_bbox/ folder present"),
    "evaluate_multi_query_of_tfrecords_without_it": (
        "tf_reid.evaluate", ["--workdir=workdir", "--multi_query=max", "--output=out.json"],
        "--multi_query: {root}/data has no 'multi_query' split; convert Market-1501 with its "
        "gt_bbox/ folder present"),
    "embeddings_non_finite": (
        "tools.visualize_embeddings", ["--features=nan.npz", "--output_dir=out"],
        "the test split of nan.npz holds non-finite features"),
    # 7. One line, not a traceback.
    "tfrecords_unwritable": (
        "tools.build_tfrecords", ["--dataset=synthetic", "--data_dir=synthetic",
                                  "--output_dir=/proc/tf-reid/out"], "/proc/tf-reid"),
    "index_unwritable": (
        "tools.build_index", ["--features=feats/features.npz", "--output=/proc/tf-reid/ix"],
        "/proc/tf-reid"),
    "export_unwritable": (
        "tools.export_saved_model", ["--workdir=workdir", "--export_dir=/proc/tf-reid",
                                     "--warmup_images=0"], "/proc/tf-reid"),
    "evaluate_garbage_features": (
        "tf_reid.evaluate", ["--features=garbage.npz"],
        "garbage.npz: not a features file (not an .npz archive)"),
    "evaluate_empty_features": (
        "tf_reid.evaluate", ["--features=empty.npz"], "empty.npz: not a features file (empty)"),
    "evaluate_wrong_keys": (
        "tf_reid.evaluate", ["--features=wrong_keys.npz"],
        "wrong_keys.npz: not a features file"),
    "visualize_garbage_features": (
        "tools.visualize_ranks", ["--features=garbage.npz", "--output_dir=out"],
        "garbage.npz: not a features file"),
    "embed_not_an_image": (
        "tools.embed", ["--saved_model=exports/reid/1", "--images=mine/notes.txt",
                        "--output=out.npz"], "mine/notes.txt: not a JPEG, PNG, GIF or BMP image"),
    "export_existing_version": (
        "tools.export_saved_model", ["--workdir=workdir", "--export_dir=exports",
                                     "--model_name=reid", "--version=1", "--warmup_images=0"],
        "exports/reid/1: version 1 exists; choose another --version"),
    "evaluate_missing_workdir": (
        "tf_reid.evaluate", ["--workdir=nothing"], "nothing: no such workdir"),
    "evaluate_workdir_and_features": (
        "tf_reid.evaluate", ["--workdir=workdir", "--features=feats/features.npz"],
        "pass exactly one of --workdir and --features"),
    "embed_truncated_jpeg": (
        "tools.embed", ["--saved_model=exports/reid/1", "--images=truncated.jpg",
                        "--output=out.npz"], "truncated.jpg: image does not decode"),
}


def features(n: int, dim: int, seed: int, nan_row: int | None = None) -> SplitFeatures:
    rng = np.random.default_rng(seed)
    global_ = rng.normal(size=(n, dim)).astype(np.float32)
    if nan_row is not None:
        global_[nan_row] = np.nan
    ids = np.arange(n, dtype=np.int64)
    return SplitFeatures(global_, None, ids % 4, ids % 2, np.array([f"{i}.png" for i in ids]),
                         np.full(n, -1, np.int64), np.full(n, -1, np.int64))


def market_layouts(root: str) -> None:
    """root/market/<case>/Market-1501-v15.09.15 with one thing wrong each (or no dataset)."""
    names = {"train": "bounding_box_train/0002_c1s1_000451_03.jpg",
             "query": "query/0003_c1s1_000551_00.jpg",
             "gallery": "bounding_box_test/0003_c2s1_000601_01.jpg"}
    os.makedirs(os.path.join(root, "market", "nothing"))
    for case in ("bad_name", "bad_image", "empty_query"):
        dataset = os.path.join(root, "market", case, "Market-1501-v15.09.15")
        write_images(dataset, [n for s, n in names.items()
                               if not (case == "empty_query" and s == "query")])
        os.makedirs(os.path.join(dataset, "query"), exist_ok=True)
    write_images(os.path.join(root, "market", "bad_name", "Market-1501-v15.09.15"),
                 ["query/03_c1.jpg"])
    with open(os.path.join(root, "market", "bad_image", "Market-1501-v15.09.15",
                           names["gallery"]), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nbroken")


def list_layouts(root: str) -> None:
    """root/own: one image and CSV lists for --dataset=list, each with one bad row."""
    write_images(os.path.join(root, "own"), ["images/1.jpg"])
    lists = {"pid.csv": "path,pid,camid,split\nimages/1.jpg,x,0,train\n",
             "split.csv": "images/1.jpg,1,0,probe\n",
             "image.csv": "images/1.jpg,1,0,train\nimages/2.jpg,1,1,query\n"}
    for name, text in lists.items():
        with open(os.path.join(root, "own", name), "w") as f:
            f.write(text)


def small_dataset_layouts(root: str) -> None:
    """root/viper/{good,no_cam_b}/VIPeR (two persons) and root/ilidsvid without its splits file."""
    for case, cameras in (("good", ("cam_a", "cam_b")), ("no_cam_b", ("cam_a",))):
        write_images(os.path.join(root, "viper", case, "VIPeR"),
                     [f"{cam}/{n:03d}_90.bmp" for cam in cameras for n in (0, 1)])
    write_images(os.path.join(root, "ilidsvid", "i-LIDS-VID", "sequences"),
                 [f"cam{c}/person00{n}/cam{c}_person00{n}_00001.png" for c in (1, 2)
                  for n in (1, 2)])


def build_world(root: str) -> None:
    """The inputs every case reads, written through the library (no command line)."""
    from tf_reid.export import saved_model

    market_layouts(root)
    list_layouts(root)
    small_dataset_layouts(root)
    data_dir = make_tfrecords(root)  # root/synthetic (images) and root/data (TFRecords)
    with open(os.path.join(data_dir, "own.csv"), "w") as f:  # a list kept in an output
        f.write("images/1.jpg,1,0,train\n")
    model = tiny_model(1)
    make_workdir(root, data_dir, model)
    baseline = AlignedReID(num_classes=2, backbone="tiny", input_shape=(HEIGHT, WIDTH, 3),
                           local_branch=False)
    os.makedirs(os.path.join(root, "baseline"))
    save_model_config(os.path.join(root, "baseline"), [baseline], data_dir=data_dir)
    tf.train.CheckpointManager(checkpoint([baseline]), os.path.join(root, "baseline",
                                                                    "checkpoints"), 1).save()
    saved_model.export(model, os.path.join(root, "exports"), "reid", None, [], {})
    model.save_weights(os.path.join(root, "w.weights.h5"))
    os.makedirs(os.path.join(root, "mine"))
    with open(os.path.join(root, "mine", "notes.txt"), "w") as f:
        f.write("a user's folder")

    os.makedirs(os.path.join(root, "feats"))
    splits = {"query": features(6, 8, 0), "gallery": features(20, 8, 1)}
    features_file.save(os.path.join(root, "feats", "features.npz"), splits,
                       {"data_dir": data_dir})
    features_file.save(os.path.join(root, "nan.npz"),
                       {**splits, "query": features(6, 8, 0, nan_row=1)})
    embeddings, metadata = inputs.read_embeddings(os.path.join(root, "feats", "features.npz"),
                                                  "gallery")
    index = gallery.build(embeddings, metadata, progress=False)
    for name in ("index", "flipped", "truncated"):
        gallery.save(index, os.path.join(root, name))
    with open(os.path.join(root, "flipped", gallery.INDEX_FILE), "r+b") as f:
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    with open(os.path.join(root, "truncated", gallery.INDEX_FILE), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)

    shutil.copytree(data_dir, os.path.join(root, "damaged"))
    for split in ("train", "query"):
        shard = read_manifest(data_dir)["splits"][split]["shards"][0]["file"]
        with open(os.path.join(root, "damaged", shard), "r+b") as f:
            f.truncate(os.path.getsize(f.name) - 7)
    for name, data in (("garbage.npz", b"\x80\x04not an archive" * 10), ("empty.npz", b"")):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    np.savez(os.path.join(root, "wrong_keys.npz"), x=np.zeros(3))
    with open(os.path.join(root, "synthetic", "query", os.listdir(
            os.path.join(root, "synthetic", "query"))[0]), "rb") as f:
        png = f.read()
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).save(jpeg, "JPEG")
    with open(os.path.join(root, "truncated.jpg"), "wb") as f:
        f.write(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    with open(os.path.join(root, "smoke.flags"), "w") as f:
        f.write("\n".join([f"--flagfile={REPO}/configs/smoke.flags", f"--data_dir={data_dir}",
                           "--num_identities=2", "--height=32", "--width=16",
                           "--noprogress"]) + "\n")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """(root, {case id: result}) of every case, run one after another over the same world."""
    root = str(tmp_path_factory.mktemp("world"))
    build_world(root)
    scratch = tmp_path_factory.mktemp("driver")
    with open(scratch / "cases.json", "w") as f:
        json.dump([{"module": module, "args": args, "cwd": root, "watch": root}
                   for module, args, _ in CASES.values()], f)
    done = subprocess.run([sys.executable, "-m", "tests.tools.forked_commands",
                           str(scratch / "cases.json"), str(scratch / "results.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(scratch / "results.json") as f:
        return root, dict(zip(CASES, json.load(f)))


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(outcomes, case_id):
    root, outcome = outcomes
    result = outcome[case_id]
    expected = CASES[case_id][2].format(root=root)
    assert result["status"] == 1, result
    assert "Traceback" not in result["stderr"], result["stderr"]
    lines = result["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result["stderr"]
    assert expected in lines[0], lines[0]
    assert result["changed"] == [], "the input tree changed or something was left behind"
