"""The errors tf-autoencoder raises on purpose, each carrying the exit status its command
ends with. The command line's one handler (cli.main) prints an Error as one line,
`PROG: error: MESSAGE`, and exits with its status; --verbose shows the traceback.

  Error                 exit 1 unless a subclass says otherwise
    UsageError          exit 2: the input asks for something that cannot be done
      ConfigError       a setting is invalid
      LayoutError       a data folder breaks its layout's rules (an MVTec AD category's masks)
    RunError            exit 1: a failure while running
      DataError         the data cannot be read
      ModelError        a path holds no usable trained model
      MissingExtra      an optional runtime is not installed
      ConversionError   a converted model is wrong
      ModelDirBusy      another process holds model_dir's lock
      WriteError        a file or folder cannot be written
      TrainingDiverged  the loss became NaN or Inf
    Interrupted         exit 128 + the signal: Ctrl-C (130) or SIGTERM (143)
  Terminated            (a KeyboardInterrupt) SIGTERM outside the training loop: exit 143

Messages say what failed, where, and how to fix it, in one line.
"""
from __future__ import annotations

import signal


class Error(Exception):
    """Base of every error raised on purpose; `exit_status` is the command's."""

    exit_status = 1


class UsageError(Error):
    exit_status = 2


class ConfigError(UsageError, ValueError):
    """A setting is invalid; the message says which and how to fix it."""


class LayoutError(UsageError):
    """A folder of images breaks its layout's rules (a defect without its mask, a mask of
    another size than its image): the input itself must change, so a usage error."""


class RunError(Error):
    exit_status = 1


class DataError(RunError):
    """The dataset cannot be loaded; the message says why and what to do instead."""


class ModelError(RunError, ValueError):
    """The path holds no trained model that can be used; the message says why."""


class MissingExtra(RunError, ImportError):
    """An optional runtime is not installed; the message says which extra installs it."""


class ConversionError(RunError, ValueError):
    """A converted model that its runtime cannot load, or that computes something else."""


class ModelDirBusy(RunError):
    """Another live process holds model_dir's lock."""


class WriteError(RunError):
    """A file or folder cannot be written; the message names the one the user knows."""


class TrainingDiverged(RunError):
    """The loss became NaN or Inf; nothing of the diverged state was saved."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles its own), raised in the main
    thread as Ctrl-C's KeyboardInterrupt is, so that no `except Exception` swallows it."""

    signum = signal.SIGTERM


class Interrupted(Error):
    """Ctrl-C or SIGTERM stopped a command; the message says what was kept.
    `exit_status` is the shell's for that signal: 130 for Ctrl-C, 143 for SIGTERM."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_status = 128 + int(signum)
