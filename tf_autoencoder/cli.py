"""The command line: `tf-autoencoder COMMAND` (also `python -m tf_autoencoder COMMAND`),
and the two top-level scripts of the original, train.py and export_embeddings.py.

Parsing only: what each command does is in commands.py. Bad input ends as one line on
stderr and exit status 2 before anything is written; failures while running end as one
line and exit status 1 (--verbose shows the traceback, and TensorFlow's C++ logging).
"""
from __future__ import annotations

import argparse
import sys

from .config import DISTRIBUTES, DOWNSAMPLES, MODELS, PRECISIONS, UPSAMPLES, Config
from .errors import Error, Interrupted
from .logs import set_up_logging
from .model_dir import CONFIG_FILE, EXPORT_DIR, EXPORT_FORMATS, FINAL_MODEL

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


def sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 16,8,8, "
                                         f"got {text!r}") from None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = Config()
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=d.model)
    g.add_argument("--num_filters", type=sizes, default=d.num_filters, metavar="16,8,8",
                   help="filters per encoder block (convolutional)")
    g.add_argument("--hidden_units", type=sizes, default=d.hidden_units, metavar="128,64,32",
                   help="units per encoder layer (fully_connected)")
    g.add_argument("--data_format", default="NHWC",
                   help="NHWC or NCHW (channels_last / channels_first accepted too)")
    g.add_argument("--dropout", type=float, default=None,
                   help="keep probability of dropout after hidden layers (default: no dropout)")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help="L2 on kernels")
    g.add_argument("--downsample", choices=DOWNSAMPLES, default=d.downsample,
                   help="encoder: 2x2 max pooling or a stride-2 3x3 conv (convolutional, variational)")
    g.add_argument("--upsample", choices=UPSAMPLES, default=d.upsample,
                   help="decoder: a kernel_size or a 2x2 stride-2 transposed conv, or nearest "
                        "resize + conv")
    g.add_argument("--convs_per_block", type=int, default=d.convs_per_block, metavar="N",
                   help="'same' convs in each encoder block before it halves the map (0: the "
                        "stride-2 conv of --downsample strided alone)")
    g.add_argument("--kernel_size", type=int, default=d.kernel_size, metavar="K",
                   help="of the convolutional models' convs (K x K)")
    g.add_argument("--no_output_layer", dest="output_layer", action="store_false",
                   help="the decoder's last block outputs the image's channels itself, with no "
                        "separate linear conv after it")
    g.add_argument("--code_size", type=int, default=None, metavar="N",
                   help="a flat code of N values: a linear layer from the encoder's last map "
                        "(a conv covering it whole) or last hidden layer (default: that map or "
                        "layer is the code)")
    g.add_argument("--code_l1", type=float, default=d.code_l1,
                   help="L1 penalty on the code, per image (sparse codes)")
    g.add_argument("--beta", type=float, default=d.beta,
                   help="weight of the KL term (variational)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="TFDS name (mnist, fashion_mnist, kmnist, ...) or mnist_sample "
                        "(default: mnist, or the MNIST sample when it cannot be downloaded)")
    g.add_argument("--data_dir", default=None,
                   help="folder of the four IDX files (gzipped or not); overrides --dataset")
    g.add_argument("--noise_factor", type=float, default=d.noise_factor,
                   help="std of Gaussian noise added to inputs (denoising)")
    g = p.add_argument_group("training")
    g.add_argument("--loss", choices=["bce", "mse"], default=d.loss,
                   help="bce: sigmoid cross-entropy on logits; mse: on sigmoid outputs")
    g.add_argument("--learning_rate", type=float, default=d.learning_rate,
                   help="Adam's initial rate")
    g.add_argument("--lr_decay_rate", type=float, default=d.lr_decay_rate,
                   help="the rate is multiplied by this every --lr_decay_steps steps; 1: constant")
    g.add_argument("--lr_decay_steps", type=int, default=d.lr_decay_steps)
    g.add_argument("--batch_size", type=int, default=d.batch_size)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    g.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism: the same --seed gives a bit-identical run on "
                        "the same machine (slower)")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="mixed_bfloat16: compute in bfloat16, keep float32 weights; auto "
                        "(default): mixed_bfloat16 when training on a CPU with AMX or AVX-512 "
                        "bfloat16, else float32 (on a GPU too)")
    g = p.add_argument_group("distribution (tf.distribute; see the README)")
    g.add_argument("--distribute", choices=DISTRIBUTES, default=d.distribute,
                   help="mirrored: every local GPU; multi_worker: the workers in TF_CONFIG. "
                        "--batch_size stays the global batch, split across the replicas")
    g.add_argument("--cpu_replicas", type=int, default=None, metavar="N",
                   help="with --distribute mirrored: train on N logical devices split from "
                        "the CPU instead of the GPUs (to try the mirrored path without GPUs)")
    g = p.add_argument_group("output")
    g.add_argument("--model_dir", default=d.model_dir, help="where the run is written")
    g.add_argument("--save_images", default=None, metavar="DIR",
                   help="write a PNG of reconstructions to DIR after each epoch")
    g.add_argument("--embedding_images", type=int, default=d.embedding_images, metavar="N",
                   help="after training, write the codes of the first N test images (all of "
                        "a smaller test split) for TensorBoard's projector; 0: none")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a model_dir that holds a different model")


def formats(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}: "
                                         f"use {', '.join(EXPORT_FORMATS)}, or several as "
                                         "tflite,onnx")
    return names


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help=f"a run that train finished ({CONFIG_FILE}, {FINAL_MODEL})")
    p.add_argument("--export_dir", default=None, metavar="DIR",
                   help=f"where the versions go (default: MODEL_DIR/{EXPORT_DIR})")
    p.add_argument("--format", type=formats, action="append", default=None, dest="formats",
                   metavar="saved_model|tflite|onnx",
                   help="what to write into the version besides the SavedModel, which is always "
                        "written: tflite (model.tflite, for LiteRT; needs the [lite] extra), "
                        "onnx (serving_default.onnx, encode.onnx, decode.onnx, for ONNX Runtime; "
                        "needs the [onnx] extra). Repeat it or give a list: --format tflite,onnx "
                        "(default: saved_model)")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help=f"a SavedModel folder, an {EXPORT_DIR}/ folder or a model_dir (its "
                        "newest version is used), run by TensorFlow; a .tflite file, run by "
                        "LiteRT; or an exported serving_default.onnx, run by ONNX Runtime")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, GIF or BMP files")
    p.add_argument("--output_dir", default="reconstructions", metavar="DIR",
                   help="where each IMAGE's <name>_reconstruction.png is written")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="the --model_dir of a finished training run")
    p.add_argument("--probe_samples", type=int, default=None, metavar="N",
                   help="fit the probe and k-NN on N random training images "
                        "(default: the whole training split)")


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
        "its reconstruction error: the mean squared error per pixel (0 to 1) between the "
        "image as the model sees it (converted to its greyscale or RGB, resized to its size, "
        "pixels scaled to [0, 1]) and its reconstruction. Higher means reconstructed worse, "
        "as images unlike the training images usually are. As an anomaly score it needs a "
        "threshold set on the scores of normal images, and a well-trained model: a briefly "
        "trained one can score a photograph about like a digit. Files that cannot be read "
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
    p.add_argument("--verbose", action="store_true",
                   help="show tracebacks of errors and TensorFlow's C++ logging")
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
        from . import commands  # after parsing: --help and usage errors need nothing more

        return commands.run(args, args.command_parser)
    except Exception as error:  # the one place an error becomes the command's last line
        if args.verbose:
            raise
        print(f"{prog}: {describe(error)}", file=sys.stderr)
        return error.exit_status if isinstance(error, Error) else 1
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def describe(error: Exception) -> str:
    """One line saying what went wrong: our own errors' messages as they are; anything
    else by its kind, with the file it concerns (--verbose shows the traceback)."""
    if isinstance(error, Interrupted):
        return str(error)
    if isinstance(error, Error):
        return f"error: {error}"
    if isinstance(error, MemoryError):
        return "error: out of memory: use a smaller --batch_size (or fewer images at once)"
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"error: {error.strerror or error}{where}"
    lines = str(error).strip().splitlines()
    text = f": {lines[0][:300]}" if lines else ""
    return f"error: {type(error).__name__}{text} (--verbose shows the traceback)"
