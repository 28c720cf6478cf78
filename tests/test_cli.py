"""The command line itself: one `tf-autoencoder` with subcommands, the same through
`python -m tf_autoencoder`, the two top-level scripts, the old `python -m
tf_autoencoder.<command>` spellings, and TensorFlow's start-up logging kept off the
terminal unless --verbose."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import error_lines, run_python, tensorflow_log_lines
from tf_autoencoder.cli import COMMANDS, build_parser


def test_one_parser_has_every_command():
    parser = build_parser()
    for command in COMMANDS:
        assert parser.parse_args([command, *{
            "train": [], "export": ["d"], "predict": ["d", "x.png"], "evaluate": ["d"],
            "sample": ["d"], "embeddings": []}[command]]).command == command


def test_python_m_tf_autoencoder_lists_the_commands_and_refuses_an_unknown_one():
    result = run_python("-m", "tf_autoencoder", "--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert re.search(rf"^    {command}\b", result.stdout, flags=re.M), command
    result = run_python("-m", "tf_autoencoder", "fly")
    assert result.returncode == 2
    assert result.stderr.startswith("python -m tf_autoencoder: error: ")
    assert result.stderr.count("\n") == 1


def test_the_console_script_is_the_same_command_line():
    script = shutil.which("tf-autoencoder", path=os.path.dirname(sys.executable))
    assert script, "pip install -e . puts tf-autoencoder beside the interpreter"
    result = subprocess.run([script, "train", "--epochs", "0"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "tf-autoencoder train: error: epochs must be >= 1 (see --help)\n"


@pytest.mark.parametrize("command, args, words", [
    ("export", ["{tmp}"], "holds no finished run"),
    ("predict", ["{tmp}/none", "x.png"], "is not a directory"),
    ("evaluate", ["{tmp}/none"], "does not exist"),
    ("sample", ["{tmp}/none"], "does not exist"),
])
def test_old_module_spellings_still_run_their_command(tmp_path, command, args, words):
    (tmp_path / "config.json").write_text(json.dumps({"model": "convolutional"}))
    result = run_python("-m", f"tf_autoencoder.{command}",
                        *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(f"python -m tf_autoencoder.{command}: error: ") and words in line


def test_a_run_shows_no_tensorflow_start_up_logging_unless_verbose(trained_run, tmp_path):
    """trained_run is a plain train.py run: TensorFlow writes its C++ start-up lines to
    file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says, and none may reach stderr."""
    assert not tensorflow_log_lines(trained_run[1].stderr), trained_run[1].stderr
    quiet = run_python("-m", "tf_autoencoder", "export", trained_run[0],
                       "--export_dir", str(tmp_path / "quiet"))
    verbose = run_python("-m", "tf_autoencoder", "export", trained_run[0], "--verbose",
                         "--export_dir", str(tmp_path / "verbose"))
    assert quiet.returncode == verbose.returncode == 0, (quiet.stderr, verbose.stderr)
    assert quiet.stderr == ""
    assert tensorflow_log_lines(verbose.stderr)


def test_logging_set_up_twice_still_imports_tensorflow_quietly():
    """A benchmark sets logging up and then runs a command, which sets it up again: two
    quiet-import hooks once sent each other looking for TensorFlow for ever."""
    code = ("from tf_autoencoder.logs import set_up_logging; set_up_logging(False); "
            "set_up_logging(False); import tensorflow; print(tensorflow.constant(2).numpy())")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2\n" and not tensorflow_log_lines(result.stderr), result.stderr
