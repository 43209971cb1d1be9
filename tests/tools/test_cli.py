"""tools.cli: flags to keyword arguments by signature, the settings diff, flagfiles, one-line
errors."""

from __future__ import annotations

import pytest
from absl import flags

from tools.cli import (FlagError, changed_settings, flagfile_settings, flagfile_text,
                       flags_as_keywords, run_reporting)


def parse(*argv: str) -> flags.FlagValues:
    """A private set of flags (so the global FLAGS stay untouched), parsed from `argv`."""
    values = flags.FlagValues()
    flags.DEFINE_integer("stride", 1, "", flag_values=values)
    flags.DEFINE_string("weights", None, "", flag_values=values)
    flags.DEFINE_bool("padding", False, "", flag_values=values)
    values(["prog", *argv])
    return values


def backbone(weights=None, stride=2):
    """Takes two of the three flags' parameters (padding is not one of them)."""


KEYWORDS = {"weights": "weights", "stride": "stride", "padding": "torch_padding"}


def test_every_flag_the_function_takes_at_its_flag_value():
    # The flag default (stride 1) wins over the function's (2); padding is not taken.
    assert flags_as_keywords(backbone, KEYWORDS, "--backbone=b", flag_values=parse()) == {
        "weights": None, "stride": 1}
    assert flags_as_keywords(backbone, KEYWORDS, "--backbone=b",
                             flag_values=parse("--stride=3")) == {"weights": None, "stride": 3}


def test_given_only_leaves_the_function_defaults():
    assert flags_as_keywords(backbone, KEYWORDS, "--backbone=b", given_only=True,
                             flag_values=parse()) == {}
    assert flags_as_keywords(backbone, KEYWORDS, "--backbone=b", given_only=True,
                             flag_values=parse("--weights=w.h5")) == {"weights": "w.h5"}


@pytest.mark.parametrize("given_only", [False, True])
def test_a_given_flag_the_function_does_not_take_is_refused(given_only):
    with pytest.raises(FlagError, match=r"^--padding does not apply to --backbone=b$"):
        flags_as_keywords(backbone, KEYWORDS, "--backbone=b", given_only=given_only,
                          flag_values=parse("--padding"))
    # Even at its default value: it was given.
    with pytest.raises(FlagError, match="--padding does not apply"):
        flags_as_keywords(backbone, KEYWORDS, "--backbone=b", given_only=given_only,
                          flag_values=parse("--nopadding"))


def test_changed_settings():
    saved = {"margin": "0.3", "epochs": "10", "seed": "0", "old": "1"}
    current = {"margin": "0.5", "epochs": "20", "seed": "0", "new": "2"}
    # margin differs, old and new are each missing on one side, epochs may change.
    assert changed_settings(saved, current, {"epochs"}) == ["margin", "new", "old"]
    assert changed_settings(saved, saved, ()) == []
    # A value of None and a missing name are the same setting.
    assert changed_settings({"a": None}, {}, ()) == []


def test_flagfile_text_and_settings():
    values = {"epochs": 3, "flip": True, "jit": False, "data_dir": ["/a", "/b"], "unset": None}
    text = flagfile_text(values)
    assert text == "--epochs=3\n--flip\n--nojit\n--data_dir=/a,/b\n"
    # "--noname" is a false boolean only for a defined flag ("--nodes" is not "des" off).
    assert flagfile_settings(text + "--nodes\n", flag_names={"epochs", "flip", "jit"}) == {
        "epochs": "3", "flip": "True", "jit": "False", "data_dir": "/a,/b", "nodes": "True"}


def test_run_reporting_prints_lines_or_one_error_line(capsys):
    assert run_reporting(lambda: ["one", "two"]) == 0
    assert capsys.readouterr().out == "one\ntwo\n"

    def misuse():
        raise FlagError("--padding does not apply to --backbone=b")

    assert run_reporting(misuse, errors=(KeyError,)) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "error: --padding does not apply to --backbone=b\n"
