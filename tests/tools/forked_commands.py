"""Runs many tf-reid command lines for the price of one interpreter start.

    python -m tests.tools.forked_commands CASES.json RESULTS.json

CASES.json is a list of {"module": "tools.search", "args": [...], "cwd": ..., "watch": ...}. The
commands' modules, and TensorFlow with them, are imported once here (no TensorFlow op runs in
this process); each case then runs in a forked child exactly as `python -m MODULE ARGS` runs it
(`runpy`, as `__main__`, with its own stdout and stderr files). RESULTS.json is the list of
{"status", "stdout", "stderr", "changed"} in the same order, "changed" being the paths under
the case's "watch" folder that the case added, removed or changed. A case costs a fork instead of the 5-6 s of
starting Python and importing TensorFlow, which is what makes a table of bad inputs affordable.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import tempfile
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what each command's quiet_tensorflow sets

import tf_reid  # noqa: E402,F401  # its environment before TensorFlow

COMMANDS = ("tools.build_tfrecords", "tools.build_index", "tools.search", "tools.embed",
            "tools.export_saved_model", "tools.visualize_ranks", "tools.inspect_tfrecords",
            "tools.generate_synthetic", "tools.convert_torch_weights", "tf_reid.train",
            "tf_reid.evaluate", "tools.visualize_alignment", "tools.visualize_embeddings",
            "tools.train_gan", "tools.generate_gan_samples")


def tree(root: str) -> dict[str, str]:
    """relative path -> sha256 of every file (and "dir" for every folder) under `root`."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _child(case: dict, stdout: str, stderr: str) -> None:
    """Runs one case in the forked child; never returns."""
    code = 1
    try:
        os.chdir(case.get("cwd", os.getcwd()))
        for fd, path in ((1, stdout), (2, stderr)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [case["module"], *case["args"]]
        sys.modules.pop(case["module"])  # runpy runs a fresh copy as __main__, as python -m does
        runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: B036  # what the interpreter would print
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(case: dict, scratch: str) -> dict:
    stdout, stderr = os.path.join(scratch, "out"), os.path.join(scratch, "err")
    before = tree(case["watch"]) if case.get("watch") else {}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(case, stdout, stderr)
    _, status = os.waitpid(pid, 0)
    after = tree(case["watch"]) if case.get("watch") else {}
    with open(stdout) as out, open(stderr) as err:
        return {"status": os.waitstatus_to_exitcode(status), "stdout": out.read(),
                "stderr": err.read(),
                "changed": sorted({path for path in set(before) | set(after)
                                   if before.get(path) != after.get(path)})}


def main(cases_path: str, results_path: str) -> None:
    for module in COMMANDS:
        __import__(module)
    with open(cases_path) as f:
        cases = json.load(f)
    with tempfile.TemporaryDirectory() as scratch:
        results = [run_case(case, scratch) for case in cases]
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
