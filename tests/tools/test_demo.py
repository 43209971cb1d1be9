"""Tests for tools.demo: stage reuse, failure reporting, and the search lines of the summary."""

from __future__ import annotations

import json
import sys

import pytest

from tools import demo


def test_run_stages_reuses_what_exists_runs_the_rest_and_names_a_failure(tmp_path):
    source, done, made = tmp_path / "in.json", tmp_path / "done.json", tmp_path / "made.json"
    source.write_text('{"b": 1, "a": 2}')
    done.write_text("kept")
    stages = [
        demo.Stage("already there", "json.tool", lambda: [str(source), str(done)], (str(done),)),
        demo.Stage("made now", "json.tool", lambda: ["--sort-keys", str(source), str(made)],
                   (str(made),)),
    ]
    timings = demo.run_stages(stages, sys.executable)
    assert [(title, reused) for title, _, reused in timings] == [("already there", True),
                                                                  ("made now", False)]
    assert done.read_text() == "kept"
    assert list(json.loads(made.read_text())) == ["a", "b"]

    broken = demo.Stage("broken", "json.tool", lambda: [str(tmp_path / "missing.json")])
    with pytest.raises(RuntimeError, match=r"stage 2 \(broken\) failed with exit status [1-9]"):
        demo.run_stages([stages[0], broken], sys.executable)


def test_search_lines_mark_the_query_identity(tmp_path):
    hits = [{"rank": r, "path": f"g{r}.png", "pid": pid, "distance": d}
            for r, pid, d in ((1, 7, 0.25), (2, 3, 0.5), (3, 7, 0.75))]
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"results": [{"path": "q.png", "pid": 7, "hits": hits}]}))
    assert demo.search_lines(str(path), shown=2) == [
        "query q.png (pid 7), top 2 of 3:",
        "   1. g1.png  distance 0.250  same person",
        "   2. g2.png  distance 0.500  other person",
    ]
