"""What every tf-reid command line shares: bad input is one `error:` line and exit status 1.

Each command defines its flags in `define_flags()`, called only when it runs as a program:

    if __name__ == "__main__":
        define_flags()
        flags.mark_flags_as_required([...])
        app.run(main, flags_parser=parse_flags)

so importing a command (a test, a bench, another command) defines no flags: commands share
flag names (--output, --progress, --data_dir, ...), and absl refuses a name defined twice.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from typing import Any, Callable, Collection, Container, Mapping, Sequence, Type

from absl import flags, logging

from tfrecords_builder.atomic import OutputError
from tfrecords_builder.records import DatasetError


class FlagError(Exception):
    """Command-line misuse (a flag that does not apply, a bad combination): the message is one
    line naming the flag."""


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, for `app.run(main, flags_parser=parse_flags)`: a bad flag (unknown,
    malformed, out of its bounds, a required one missing) is one `error:` line and status 1,
    instead of absl's FATAL line and usage hint."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # several missing required flags: one line each
        print("error: " + "; ".join(str(e).splitlines()), file=sys.stderr)
        sys.exit(1)


def warnings_only_unless_verbose() -> None:
    """absl logs from WARNING up unless `--verbosity` was given (call after flag parsing)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run_reporting(body: Callable[[], Sequence[str]],
                  errors: tuple[Type[Exception], ...] = (DatasetError,)) -> int:
    """Runs `body`, prints the lines it returns, and returns the exit status.

    A FlagError, an OutputError (writing would lose data), an OSError about a named file (an
    unwritable output, an unreadable input), or an exception of `errors` (bad input:
    DatasetError by default) becomes one `error: <message>` line on stderr and status 1. absl
    logs from WARNING up unless
    `--verbosity` is given: TensorFlow's INFO lines (a line per checkpoint or SavedModel
    write) would bury the command's own output.
    """
    warnings_only_unless_verbose()
    try:
        lines = body()
    except (FlagError, OutputError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {os_error(e)}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def os_error(e: OSError) -> str:
    """'<file>: <reason>' of an OSError that names its file (or files)."""
    also = f" -> {e.filename2}" if e.filename2 else ""
    return f"{e.filename}{also}: {e.strerror or e}"


def flags_as_keywords(function: Callable[..., Any], keywords: Mapping[str, str], target: str,
                      given_only: bool = False,
                      flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
    """The values of the flags that `function` takes, keyed by its parameter names.

    Args:
      function: its signature decides which of the flags apply.
      keywords: {flag name: parameter name of `function`}.
      target: what the flags would apply to, for the error message ("--dataset=mars").
      given_only: only the flags given on the command line (or in a flagfile), so that the
        others leave `function`'s defaults; otherwise every flag it takes, at its flag value.
      flag_values: the parsed flags.

    Returns:
      {parameter name: flag value}, in the order of `keywords`.

    Raises:
      FlagError: a flag given on the command line that `function` does not take.
    """
    accepted = inspect.signature(function).parameters
    options = {}
    for flag, keyword in keywords.items():
        given = flag_values[flag].present
        if keyword not in accepted:
            if given:
                raise FlagError(f"--{flag} does not apply to {target}")
        elif given or not given_only:
            options[keyword] = flag_values[flag].value
    return options


def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any],
                     may_change: Collection[str]) -> list[str]:
    """Sorted names whose values differ between a run's saved and current settings.

    A name missing on one side counts as the value None there; names in `may_change` are
    left out (settings that change neither the model nor its data stream).
    """
    return sorted(name for name in set(saved) | set(current)
                  if name not in may_change and saved.get(name) != current.get(name))


def own_flags(module: types.ModuleType,
              flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
    """The flags `module` defines and their values, sorted by name (a run's resolved settings).

    Run as a program (`python -m`), absl files them under the script's path instead.
    """
    names = [f.name for f in flag_values.get_flags_for_module(module)]
    if not names:
        names = [f.name for f in flag_values.get_flags_for_module(sys.argv[0])]
    return {name: flag_values[name].value for name in sorted(names)}


def flagfile_text(values: Mapping[str, Any]) -> str:
    """`values` as a --flagfile: `--name=value` lines, `--name` / `--noname` for booleans, lists
    joined by commas; None values left out."""
    lines = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, list):
            lines.append(f"--{name}={','.join(map(str, value))}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def flagfile_settings(text: str, flag_names: Container[str] = flags.FLAGS) -> dict[str, str]:
    """{name: value} of a flagfile's `--name=value` lines; a boolean's `--name` is "True" and
    its `--noname` "False" (when `name` is in `flag_names`)."""
    settings = {}
    for line in text.split():
        name, sep, value = line[2:].partition("=")
        if not sep:
            value = "True"
            if name.startswith("no") and name[2:] in flag_names:
                name, value = name[2:], "False"
        settings[name] = value
    return settings


def check_resume(workdir: str, values: Mapping[str, Any], resumable: Collection[str],
                 run_files: Collection[str], flag_names: Container[str] = flags.FLAGS) -> None:
    """Refuses to resume the run in `workdir` with settings that change what it trains.

    Args:
      workdir: the run's folder; its flags.txt holds the settings it was started with.
      values: the current settings, as flags.txt records them (`flagfile_text`).
      resumable: the names that may differ (they change neither the model nor its data).
      run_files: what the command writes before its first checkpoint: a failed start
        (`workdir.failed_start`) is not checked, it starts afresh.
      flag_names: the defined flags (to read `--noname` lines).

    Raises:
      WorkdirError: a setting outside `resumable` differs.
    """
    # Imported here: it loads TensorFlow, which the commands without a workdir do not need.
    from tf_reid.training import workdir as workdir_lib

    path = os.path.join(workdir, workdir_lib.FLAGS_FILE)
    if not os.path.isfile(path) or workdir_lib.failed_start(workdir, run_files):
        return  # nothing to resume: the run starts afresh
    with open(path) as f:
        saved = flagfile_settings(f.read(), flag_names)
    changed = changed_settings(saved, flagfile_settings(flagfile_text(values), flag_names),
                               resumable)
    if changed:
        raise workdir_lib.WorkdirError(
            f"{path}: --resume with different settings ({', '.join(changed)}); only "
            f"{', '.join(sorted(resumable))} may change")
