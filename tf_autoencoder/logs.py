"""Logging, set up once per process by the command line: TensorFlow's C++ start-up lines
and its Python warnings stay off unless --verbose."""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

# TensorFlow's C++ start-up lines (absl logging), which TF_CPP_MIN_LOG_LEVEL does not stop.
TF_CPP_LOG_LINE = re.compile(r"[IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog")


def set_up_logging(verbose: bool) -> None:
    """Once per process, before TensorFlow loads: its C++ start-up logging and its Python
    warnings stay off unless `verbose`. TensorFlow itself loads later, when a command
    needs it, so that bad input is still answered in a moment."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what it honours, after start-up
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    for logger in ("tensorflow", "absl"):  # absl: TFDS's warnings; ours say what matters
        logging.getLogger(logger).setLevel(logging.ERROR)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` with file descriptor 2 captured: its C++ start-up lines are
    written there directly, whatever TF_CPP_MIN_LOG_LEVEL says. Anything else it wrote
    (a real error, a Python warning) is passed on afterwards. It stays in place until
    TensorFlow loads: TFDS looks TensorFlow up (find_spec) long before it imports it."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        others = [finder for finder in sys.meta_path if hasattr(finder, "find_spec")
                  and not isinstance(finder, _QuietTensorFlowImport)]
        spec = next(filter(None, (finder.find_spec(name, path, target) for finder in others)), None)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                with stderr_without(TF_CPP_LOG_LINE):
                    exec_module(module)

            spec.loader.exec_module = quiet_exec_module
        return spec


@contextlib.contextmanager
def stderr_without(pattern):
    """Captures file descriptor 2, where C++ code writes, and passes on afterwards every
    line that does not match `pattern` (a regular expression, matched at the start)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not re.match(pattern, line):
                    sys.stderr.write(line)
