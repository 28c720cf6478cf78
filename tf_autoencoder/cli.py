"""The command line: `tf-autoencoder COMMAND` (also `python -m tf_autoencoder COMMAND`),
and the two top-level scripts of the original, train.py and export_embeddings.py.

Parsing only: what each command does is in commands.py. Bad input ends as one line on
stderr and exit status 2 before anything is written; failures while running end as one
line and exit status 1 (--verbose shows the traceback, and TensorFlow's C++ logging).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from typing import NoReturn

from .config import ANOMALY_MAPS, DEFAULTS, GROUPS, MAX_PIXELS, Config, whole_number
from .errors import Error, Interrupted, Terminated
from .files import DISK_FULL, is_disk_full
from .logs import set_up_logging
from .model_dir import CONFIG_FILE, EXPORT_DIR, FINAL_MODEL
from .serving.formats import FORMATS, SAVED_MODEL

PROG = "tf-autoencoder"
COMMANDS = ("train", "export", "predict", "evaluate", "sample", "embeddings")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line: `prog: error: message (see --help)`, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not None (the help says what no value means), nor an on/off
    switch's, nor one the help already gives."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0 or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _argparse_type(parse):
    """A Flag's parse function as an argparse type: its ValueError becomes a usage error."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__  # argparse names the type in its messages
    return convert


def flag_name(declared: dataclasses.Field) -> str:
    return declared.metadata["flag"].name or f"--{declared.name}"


class Given(argparse.Action):
    """Stores a setting's value and remembers that the command line gave it (in `given`),
    so that a setting left at its default can be chosen from the data instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = frozenset(namespace.given | {self.dest})


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """One argument per declared setting of Config (config.py), in its group, then the
    options of the command itself."""
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    p.set_defaults(given=frozenset())
    for declared in dataclasses.fields(Config):
        flag = declared.metadata["flag"]
        if not flag.on_command_line:
            continue
        default = DEFAULTS[declared.name]
        kwargs = dict(dest=declared.name, help=flag.help, default=default)
        if flag.switch is not None:
            kwargs["action"] = "store_true" if flag.switch else "store_false"
        else:
            parse = flag.parse or (type(default) if default is not None else str)
            kwargs.update(type=_argparse_type(parse), choices=flag.choices,
                          metavar=flag.metavar, action=Given)
        groups[flag.group].add_argument(flag_name(declared), **kwargs)
    for name, kwargs in TRAIN_OPTIONS.items():
        groups["output"].add_argument(name, **kwargs)


# train's options that are not settings of the run: how to run, not what.
TRAIN_OPTIONS = {"--overwrite": dict(action="store_true",
                                     help="replace a model_dir that holds a different model")}
VERBOSE = dict(action="store_true",
               help="show the traceback of an error instead of one line, and TensorFlow's C++ "
                    "start-up logging (hidden by default)")


def flags_table() -> str:
    """The README's table of train's flags, made from the same declarations as the parser."""
    def shown(value):
        if isinstance(value, list):
            return f"`{','.join(map(str, value))}`"
        return "none" if value is None else f"`{value}`"

    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for declared in dataclasses.fields(Config):
        flag = declared.metadata["flag"]
        if not flag.on_command_line:
            continue
        if flag.switch is not None:
            default = "off"
        elif flag.shown_default:
            default = f"`{flag.shown_default}`" if flag.shown_default != "drawn" else "drawn"
        else:
            default = shown(DEFAULTS[declared.name])
        rows.append(f"| `{flag_name(declared)}` | {default} | {flag.doc or flag.help} |")
    for name, kwargs in {**TRAIN_OPTIONS, "--verbose": VERBOSE}.items():
        rows.append(f"| `{name}` | off | {kwargs['help']} |")
    return "\n".join(rows) + "\n"


def formats(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        others = ",".join(name for name in FORMATS if name != SAVED_MODEL.name)
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}: "
                                         f"use {', '.join(FORMATS)}, or several as {others}")
    return names


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help=f"a run that train finished ({CONFIG_FILE}, {FINAL_MODEL})")
    p.add_argument("--export_dir", default=None, metavar="DIR",
                   help=f"where the versions go (default: MODEL_DIR/{EXPORT_DIR})")
    others = [fmt for fmt in FORMATS.values() if fmt is not SAVED_MODEL]
    p.add_argument("--format", type=formats, action="append", default=None, dest="formats",
                   metavar="|".join(FORMATS),
                   help="what to write into the version besides the SavedModel, which is always "
                        "written: " + ", ".join(
                            f"{fmt.name} ({', '.join(fmt.files)}, for {fmt.runtime}; needs the "
                            f"[{fmt.extra}] extra)" for fmt in others)
                        + ". Repeat it or give a list: --format "
                        + ",".join(fmt.name for fmt in others) + f" (default: {SAVED_MODEL.name})")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    ways = [f"{fmt.given_as}, run by {fmt.runtime}" for fmt in FORMATS.values()]
    p.add_argument("model", metavar="MODEL",
                   help="; ".join(ways[:-1]) + "; or " + ways[-1])
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="PNG, JPEG, GIF or BMP files, or folders of them (searched recursively)")
    p.add_argument("--csv", default=None, metavar="PATH",
                   help="write one row per image (path, score) to PATH, and print a progress "
                        "line every 10,000 images instead of a line per image")
    p.add_argument("--output_dir", default=None, metavar="DIR",
                   help="where each image's <name>_reconstruction.png is written (default: "
                        "reconstructions, when only files are given; none for folders)")
    p.add_argument("--no_reconstructions", action="store_true",
                   help="write no reconstruction PNGs, only the scores")
    p.add_argument("--maps", default=None, metavar="DIR",
                   help="write a picture of each image's anomaly map to DIR/<name>_map.png: "
                        "the image, its map with a colour scale, the map over the image, "
                        "the score and verdict in the title (the map is the one the export "
                        "serves: the run's --anomaly_map)")
    p.add_argument("--tiles", action="store_true",
                   help="score an image larger than the model's input in overlapping tiles "
                        "of the model's size instead of resizing it (so a small defect is not "
                        "shrunk away): its map stitched at the image's own size, its score "
                        "the highest tile's")
    p.add_argument("--max_pixels", type=_argparse_type(whole_number), default=MAX_PIXELS,
                   metavar="N",
                   help="refuse an image of more than N pixels (width x height), told by "
                        "its header before it is decoded")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="the --model_dir of a finished training run")
    p.add_argument("--probe_samples", type=int, default=None, metavar="N",
                   help="fit the probe and k-NN on N random training images "
                        "(default: the whole training split)")
    p.add_argument("--map", choices=ANOMALY_MAPS, default=None,
                   help="on an MVTec AD category: the anomaly maps scored against its masks, "
                        "the squared error (l2) or 1 - SSIM (ssim) per pixel (default: the "
                        "run's --anomaly_map)")
    p.add_argument("--map_sigma", type=float, default=None, metavar="PIXELS",
                   help="the maps' Gaussian smoothing, in pixels, 0: none (default: the run's "
                        "--anomaly_map_sigma)")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="the --model_dir of a finished --model variational run")
    p.add_argument("--n", type=int, default=64, help="how many images")
    p.add_argument("--out", default=None, help="PNG path (default: MODEL_DIR/samples.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn codes")


def add_embeddings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model_dir", default=Config().model_dir,
                   help="a training run's model_dir, or a SavedModel directory "
                        "(e.g. MODEL_DIR/export/1)")
    p.add_argument("--what", choices=["embedding", "reconstruction"], default="embedding",
                   help="embedding: projector files of the codes; reconstruction: a PNG grid of "
                        "inputs, noisy inputs (denoising) and reconstructions")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="how many test images, from the first (default: 10,000 or the whole "
                        "test split for embedding, 10 for reconstruction)")
    p.add_argument("--output", default=None,
                   help="embedding: a directory (default MODEL_DIR/projector); reconstruction: "
                        "a PNG file (default MODEL_DIR/reconstructions.png); needed for a SavedModel")
    p.add_argument("--noise_factor", type=float, default=None,
                   help="std of the Gaussian noise added to the inputs, as in training "
                        "(default: the run's)")
    p.add_argument("--dataset", default=None, help="dataset to take test images from (default: the run's)")
    p.add_argument("--data_dir", default=None, help="folder of IDX files (default: the run's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the noise (default: the run's)")
    p.add_argument("--save_npy", action="store_true", help="embedding: also write codes.npy")
    p.add_argument("--save_tsv", action="store_true",
                   help="embedding: also write codes.tsv and labels.tsv")
    p.add_argument("--no_show", action="store_true",
                   help="reconstruction: do not open a window even when a display is available")


# command -> (adds its arguments, one-line summary, description)
SPECS = {
    "train": (add_train_arguments, "train (or resume) an autoencoder",
              "Train a (denoising) autoencoder on MNIST-like images."),
    "export": (add_export_arguments, "export a finished run as a SavedModel (and TFLite, ONNX)", (
        "Export a finished run's model as a SavedModel for serving, as the next version "
        f"MODEL_DIR/{EXPORT_DIR}/<1, 2, ...>/, with TFLite and ONNX models beside it on "
        "request (--format), each checked in its runtime before the version appears. "
        "Signatures, NHWC float32 images in [0, 1] with any batch size: serving_default "
        "(images -> reconstructions), encode (images -> codes), decode (codes -> "
        "reconstructions).")),
    "predict": (add_predict_arguments, "reconstruct and score image files", (
        "Reconstruct image files with an exported autoencoder. Prints one line per image with "
        "its anomaly score and verdict: the reconstruction error, the mean squared error per "
        "pixel (0 to 1) between the image as the model sees it (converted to its greyscale "
        "or RGB, resized to its size, pixels scaled to [0, 1]) and its reconstruction, or "
        "for a run trained with --anomaly_score code the distance of its code to the normal "
        "images' codes. Higher means less like the training images; the verdict compares it "
        "with the threshold calibrated on normal images, and needs a well-trained model: a "
        "briefly trained one can score a photograph about like a digit. Files that cannot be read "
        "are reported and skipped; the exit status is then 1.")),
    "evaluate": (add_evaluate_arguments, "image and code quality of a finished run",
                 "BCE, MSE, PSNR and SSIM of the test reconstructions, and linear-probe and "
                 "k-NN accuracy of the codes; writes MODEL_DIR/evaluation.json."),
    "sample": (add_sample_arguments, "images a variational model generates",
               "Decode codes drawn from N(0, I) with a variational model's decoder and write "
               "them as one PNG grid."),
    "embeddings": (add_embeddings_arguments, "projector files or a reconstruction picture",
                   "Latent codes of test images for TensorBoard's projector, or a picture of "
                   "reconstructions, from a trained model_dir or a SavedModel. Settings default "
                   "to the model_dir's config.json."),
}


def command_parser(command: str, prog: str, parent=None) -> argparse.ArgumentParser:
    """The parser of one command, standalone (a top-level script) or as a subcommand."""
    add_arguments, summary, description = SPECS[command]
    kwargs = dict(description=description, formatter_class=HelpFormatter)
    p = (parent.add_parser(command, help=summary, prog=prog, **kwargs) if parent
         else Parser(prog=prog, **kwargs))
    add_arguments(p)
    p.add_argument("--verbose", **VERBOSE)
    p.set_defaults(command=command, command_parser=p)  # its prog for the command's errors
    return p


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="The convolutional denoising autoencoder of the "
                                           "TensorFlow Estimator post, on TensorFlow 2 / Keras 3.")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True,
                                       parser_class=Parser)
    for command in COMMANDS:
        command_parser(command, f"{prog} {command}", subparsers)
    return parser


def main(argv: list[str] | None = None, *, command: str | None = None,
         prog: str | None = None) -> int:
    """Parses `argv` (default: sys.argv[1:]) and runs the command; returns the exit status.

    command: run that command with `argv` as its arguments (the top-level scripts, and the
    old `python -m tf_autoencoder.<command>` spellings), under `prog` in messages."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if command:
        parser = command_parser(command, prog or f"{PROG} {command}")
    else:
        parser = build_parser(prog or PROG)
    args = parser.parse_args(argv)
    set_up_logging(args.verbose)
    prog = args.command_parser.prog
    try:
        with terminate_as_interrupt():
            from . import commands  # after parsing: --help and usage errors need nothing more

            return commands.run(args, args.command_parser)
    except Exception as error:  # the one place an error becomes the command's last line
        if args.verbose:
            raise
        print(f"{prog}: {describe(error)}", file=sys.stderr)
        return error.exit_status if isinstance(error, Error) else 1
    except KeyboardInterrupt as interrupt:
        if args.verbose:
            raise
        terminated = isinstance(interrupt, Terminated)
        print(f"{prog}: {'terminated (SIGTERM)' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 128 + int(signal.SIGTERM if terminated else signal.SIGINT)


def exit_with(status: int) -> NoReturn:
    """Ends the process with a command's exit status: what the scripts and
    `tf-autoencoder` do after main(). As sys.exit would (atexit callbacks run, output
    flushed), but once TensorFlow is loaded without the interpreter's teardown of every
    module, which took over a second after the command had finished (docs/speed.md).
    The commands close, and sync, every file they write before they return."""
    if "tensorflow" not in sys.modules:
        sys.exit(status)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): as the interpreter says it
            status = status or 120
    os._exit(status)


def console_main() -> NoReturn:
    """The `tf-autoencoder` command."""
    exit_with(main())


@contextlib.contextmanager
def terminate_as_interrupt():
    """While inside: SIGTERM raises Terminated (a KeyboardInterrupt), so that a command
    stopped by a scheduler or `kill` ends with its one line and status 143, as Ctrl-C
    ends with 130, instead of dying without a word."""
    def handler(signum, frame):
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # signals need it
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(error: Exception) -> str:
    """One line saying what went wrong: our own errors' messages as they are; anything
    else by its kind (a full disk, memory, a file), with the first line of its message,
    which names the file where there is one (--verbose shows the traceback)."""
    if isinstance(error, Interrupted):
        return str(error)
    if isinstance(error, Error):
        return f"error: {error}"
    text = str(getattr(error, "message", None) or error).strip()
    first = text.splitlines()[0][:300] if text else ""
    kind = type(error).__name__
    if is_disk_full(error):
        where = f" ({error.filename})" if getattr(error, "filename", None) else f" ({first})"
        return (f"error: {DISK_FULL}{where}: free some space "
                "and run the command again (a run resumes from its last checkpoint)")
    if isinstance(error, MemoryError) or (kind == "ResourceExhaustedError" and "OOM" in text):
        return ("error: out of memory: lower --batch_size (or ask for fewer images at once); "
                f"{kind}: {first}" if first else "error: out of memory: lower --batch_size")
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"error: {error.strerror or first}{where}"
    return f"error: {kind}{': ' + first if first else ''} (--verbose shows the traceback)"
