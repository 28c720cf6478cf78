"""The settings of a run, each declared once, and what a run found out while it ran.

`Config` holds what the user asked for: one dataclass field per setting, whose metadata
(a `Flag`) says everything else about it: its help, its group, its choices, how the
command line spells it, whether it shapes the weights (architecture) and whether
TensorBoard's HParams tab shows it. The parser (cli.py), HPARAMS, the architecture
check and the README's flag table are all made from these declarations.

`RunFacts` holds what was found while running (the image shape, the data actually read,
the seed drawn, the precision picked, how the images were read): it is written beside
config.json as run.json, and `Config.resolved(facts)` is the configuration a run trains with.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import ConfigError
from .files import write_text_atomic
from .words import plural

MODELS = ("convolutional", "fully_connected", "variational")
CONV_MODELS = ("convolutional", "variational")  # built from conv_encoder / conv_decoder
DOWNSAMPLES = ("pool", "strided")
UPSAMPLES = ("transpose", "transpose_2x2", "resize")
LOSSES = ("bce", "mse")
LINEAR_PATHS = ("none", "pca")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
DISTRIBUTES = ("none", "mirrored", "multi_worker")
ANOMALY_SCORES = ("reconstruction", "code")  # run/anomaly.py computes both
ANOMALY_MAPS = ("l2", "ssim")  # model/maps.py computes both
# --data_format accepts the TensorFlow names and the Keras names; we store the Keras one.
DATA_FORMATS = {
    "NHWC": "channels_last",
    "NCHW": "channels_first",
    "channels_last": "channels_last",
    "channels_first": "channels_first",
}

# Decoding takes (width x height x channels) floats, however small the file: a PNG of
# 50,000 x 50,000 pixels is a few hundred kB on disk and 30 GB decoded. Image headers are
# read first and images above this many pixels refused (--max_pixels raises it).
MAX_PIXELS = 100_000_000

# The groups of `train --help`, in order.
GROUPS = ("model", "data", "training", "distribution (tf.distribute; see the README)", "output")


def height_width(text: str) -> list[int]:
    """'64x48' -> [64, 48] (height, width); ValueError for anything else."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected HxW such as 64x64, got {text!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"expected positive sizes HxW such as 64x64, got {text!r}")
    return [height, width]


def class_list(text: str) -> list:
    """'china,flower' -> ['china', 'flower']; '0,4' -> [0, 4]: class names, or label numbers
    where a part is all digits (data/sources.resolve_classes tells which is meant)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"expected comma-separated classes such as 0,4 or cat,dog, got {text!r}")
    return [int(part) if part.isdigit() else part for part in parts]
def whole_number(text: str) -> int:
    """'100000000', '1e8', '100,000,000' or '100_000_000' -> 100000000; ValueError for
    anything that is not a whole number."""
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value.is_integer():
        raise ValueError(f"expected a whole number such as 100000000 or 1e8, got {text!r}")
    return int(value)


def sizes(text: str) -> list[int]:
    """'16,8,8' -> [16, 8, 8]; ValueError for anything else."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers such as 16,8,8, "
                         f"got {text!r}") from None


@dataclass(frozen=True)
class Flag:
    """How one setting is offered and what it means. Its declaration is the field's."""
    help: str  # `--help`'s text (plain)
    group: str  # one of GROUPS
    doc: Optional[str] = None  # the README table's text (markdown); default: help
    choices: Optional[tuple] = None
    parse: Optional[Callable[[str], Any]] = None  # text -> value (default: the field's type)
    metavar: Optional[str] = None
    name: Optional[str] = None  # the flag, when it is not --<field>
    switch: Optional[bool] = None  # an on/off flag: the value it stores when given
    shown_default: Optional[str] = None  # the default as the README shows it
    architecture: bool = False  # changes the weights' shapes: a run cannot resume across it
    conv_only: bool = False  # of the convolutional builders; the fully connected model
    #                          must keep its default
    hparam: bool = True  # a column of TensorBoard's HParams tab
    on_command_line: bool = True
    # The builders (model/layers.py) that take it as a keyword argument of its name:
    # models.py passes it on, so a new builder option is its declaration and its code.
    builders: tuple = ()


def setting(default, help: str, group: str, **flag) -> Any:
    """A dataclass field with its Flag as metadata (a list default is copied per Config)."""
    metadata = {"flag": Flag(help=help, group=group, **flag)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    # --- model
    model: str = setting(
        "convolutional", "which autoencoder", "model", choices=MODELS, architecture=True,
        doc="`convolutional`, `fully_connected` or `variational` "
            "([variants](docs/variants-and-evaluation.md#variants))")
    num_filters: list[int] = setting(
        [16, 8, 8], "filters per encoder block (convolutional, variational)", "model",
        parse=sizes, metavar="16,8,8", architecture=True, conv_only=True)
    hidden_units: list[int] = setting(
        [128, 64, 32], "units per encoder layer (fully_connected)", "model", parse=sizes,
        metavar="128,64,32", architecture=True)
    data_format: str = setting(
        "channels_last", "NHWC or NCHW (channels_last / channels_first accepted too)",
        "model", shown_default="NHWC", metavar="NHWC|NCHW",
        doc="`NHWC` or `NCHW` (`channels_last` / `channels_first` too)")
    dropout: Optional[float] = setting(
        None, "keep probability of dropout after each hidden layer, as in the original "
              "(default: no dropout)", "model", parse=float)
    weight_decay: float = setting(
        1e-5, "L2 penalty on kernels", "model",
        doc="L2 penalty on kernels (slim's convention: `w * sum(k^2) / 2`)")
    downsample: str = setting(
        "pool", "encoder halving: 2x2 max pooling, or a stride-2 conv of --kernel_size",
        "model", choices=DOWNSAMPLES, architecture=True, conv_only=True,
        builders=("conv_encoder",),
        doc="encoder halving: `pool` (2x2 max pooling) or `strided` (a stride-2 conv of "
            "`--kernel_size`)")
    upsample: str = setting(
        "transpose", "decoder doubling: a stride-2 transposed conv of --kernel_size "
                     "(transpose) or of 2x2 (transpose_2x2), or nearest resize + conv (resize)",
        "model", choices=UPSAMPLES, architecture=True, conv_only=True,
        builders=("conv_decoder",),
        doc="decoder doubling: `transpose` (a stride-2 transposed conv of `--kernel_size`), "
            "`transpose_2x2` (a stride-2 2x2 transposed conv) or `resize` "
            "(nearest-neighbour resize, then a conv)")
    convs_per_block: int = setting(
        2, "'same' convs in each encoder block before it halves the map (0: the stride-2 "
           "conv of --downsample strided alone)", "model", metavar="N", architecture=True,
        conv_only=True, builders=("conv_encoder",))
    kernel_size: int = setting(
        3, "of every conv and transposed conv of the convolutional models (but "
           "transpose_2x2's)", "model", metavar="K", architecture=True, conv_only=True,
        builders=("conv_encoder", "conv_decoder"))
    output_layer: bool = setting(
        True, "the decoder's last block outputs the image's channels itself, with no "
              "separate linear conv after it", "model", name="--no_output_layer",
        switch=False, architecture=True, conv_only=True, builders=("conv_decoder",))
    code_size: Optional[int] = setting(
        None, "a flat code of N values: a linear layer from the encoder's last map (a conv "
              "covering it whole) or last hidden layer (default: that map or layer is the "
              "code)", "model", parse=int, metavar="N", architecture=True,
        doc="a flat code of N values: a linear layer from the encoder's last map (a conv as "
            "large as the map) or last hidden layer, mirrored in the decoder; `2` also draws "
            "the codes ([latent_2d.png](docs/variants-and-evaluation.md#a-two-value-code-"
            "latent_2dpng))")
    linear_path: str = setting(
        "none", "pca: a linear path image -> code -> image added to the convolutions' own, "
                "started at the principal components of the training images, so that "
                "training starts at PCA's reconstruction and the convolutions learn what "
                "it misses (needs --code_size; the code stays the only path)", "model",
        choices=LINEAR_PATHS, architecture=True, conv_only=True,
        doc="`pca`: a linear path image -> code -> image added to the convolutions' own, "
            "started at the training images' principal components: training starts at "
            "PCA's reconstruction and the convolutions learn what it misses (needs "
            "`--code_size`; the code stays the only path from image to image; "
            "[photographs](#your-own-images))")
    code_l1: float = setting(
        0.0, "L1 penalty on the code, per image (sparse codes; not with variational)",
        "model", doc="L1 penalty on the code: `code_l1 * mean over images of sum abs(code)` "
                     "(sparse codes; not with `variational`)")
    beta: float = setting(1.0, "weight of the KL term (variational)", "model")
    # --- data
    dataset: Optional[str] = setting(
        None, "TFDS name (mnist, fashion_mnist, cifar10, ...: any image dataset, at its "
              "own size and colour) or mnist_sample (default: mnist, or the MNIST sample "
              "when it cannot be downloaded)", "data",
        shown_default="mnist",
        doc="a TFDS name (`mnist`, `fashion_mnist`, `cifar10`, ...: any image dataset, at "
            "its own size and colour) or `mnist_sample`; without it, MNIST, or the sample "
            "when MNIST cannot be downloaded")
    data_dir: Optional[str] = setting(
        None, "a folder of images (DIR/<class>/*.png, DIR/*.jpg, or DIR/train|validation|"
              "test/ with either inside; PNG, JPEG, BMP, GIF), or of the four IDX files "
              "(gzipped or not); overrides --dataset", "data", hparam=False,
        doc="a folder of images (`DIR/<class>/*.png`, `DIR/*.jpg`, or `DIR/train|validation|"
            "test/` with either inside; [layouts](docs/data.md#your-own-images)), or of the "
            "four IDX files (gzipped or not); overrides `--dataset`")
    image_size: Optional[list[int]] = setting(
        None, "resize a folder's or TFDS dataset's images to H x W: the largest centred "
              "crop of that aspect ratio, scaled (the aspect ratio is kept, the edges "
              "beyond it cropped) (default: the images' own size, which must be the same "
              "for all)", "data",
        parse=height_width, metavar="HxW", architecture=True, hparam=False)
    channels: Optional[int] = setting(
        None, "convert a folder's or TFDS dataset's images to 1 (grey) or 3 (RGB) "
              "channels; alpha is dropped (default: the images' own, which must be the "
              "same for all)", "data",
        parse=int, metavar="1|3", architecture=True, hparam=False)
    max_pixels: int = setting(
        MAX_PIXELS, "refuse a folder's image of more than N pixels (width x height), told by "
                    "its header before it is decoded", "data", metavar="N", hparam=False,
        parse=whole_number,
        shown_default=f"{MAX_PIXELS:,}")
    cache: Optional[str] = setting(
        None, "decode a folder's (or a TFDS dataset's) images once, then read their pixels "
              "every epoch: from memory (memory) or from a file in the folder DIR, reused "
              "while the images are unchanged; none decodes them anew every epoch "
              "(default: memory when the decoded images take at most a quarter of the "
              "memory available, else none)", "data", metavar="memory|none|DIR",
        hparam=False, shown_default="by size",
        doc="decode a folder's (or a TFDS dataset's) images once, then read their pixels "
            "every epoch: from memory (`memory`) or from a file in the folder DIR, reused "
            "while the images are unchanged; `none` decodes them anew every epoch; by "
            "default `memory` when the decoded images take at most a quarter of the memory "
            "available, else `none` ([in memory or streamed](docs/data.md#in-memory-or-streamed))")
    skip_bad_images: bool = setting(
        False, "skip (and count) a folder's images that cannot be read or decoded, instead "
               "of stopping at the first one (every image is then decoded once before "
               "training)", "data", switch=True, hparam=False)
    normal_classes: Optional[list] = setting(
        None, "train and validate on these classes only, by name (a class folder's, e.g. "
              "good) or label number (e.g. 0,4); the test split keeps every image, scored as "
              "normal or anomalous (default: every image)", "data",
        parse=class_list, metavar="0,4|NAME,...", shown_default="all",
        doc="train and validate on these classes only, by name (a class folder's, e.g. "
            "`good`) or label number (e.g. `0,4`); the test split keeps every image, each "
            "normal or anomalous ([flagging unusual images](docs/anomaly.md))")
    anomaly_fpr: float = setting(
        0.01, "the share of normal validation images the calibrated threshold flags "
              "(its false-positive rate), in (0, 1)", "data",
        doc="the share of normal validation images the calibrated threshold flags (its "
            "false-positive rate), in (0, 1); it needs about `10 / rate` validation images "
            "([anomaly](docs/anomaly.md#the-threshold))")
    anomaly_score: str = setting(
        "reconstruction", "how an image is scored as anomalous: reconstruction (its mean "
                          "squared error) or code (the Mahalanobis distance of its code to "
                          "the normal training images' codes)", "data",
        choices=ANOMALY_SCORES, hparam=False,
        doc="how an image is scored as anomalous: `reconstruction`, its mean squared error; "
            "`code`, the Mahalanobis distance of its code to a Gaussian fitted on the "
            "training images' codes ([anomaly](docs/anomaly.md#the-score))")
    anomaly_map: str = setting(
        "l2", "the per-pixel map of where an image is unusual, that the export serves and "
              "predict --maps draws: l2 (squared error) or ssim (1 - SSIM), of the image "
              "against its reconstruction", "data", choices=ANOMALY_MAPS, hparam=False,
        doc="the per-pixel map of where an image is unusual, that the export serves and "
            "`predict --maps` draws: `l2`, the squared error of the image against its "
            "reconstruction; `ssim`, 1 - SSIM; for a code-scored run too "
            "([maps](docs/export-and-serving.md#anomaly-maps))")
    anomaly_map_sigma: float = setting(
        4.0, "the anomaly map is smoothed by a Gaussian of this many pixels; 0: not smoothed",
        "data", metavar="PIXELS", hparam=False)
    noise_factor: float = setting(
        0.0, "std of Gaussian noise added to the inputs (denoising)", "data",
        doc="inputs get `noise_factor * N(0, 1)` noise, clipped to [0, 1], new each epoch; "
            "targets stay clean")
    # --- training
    loss: str = setting(
        "bce", "bce: sigmoid cross-entropy on logits; mse: on sigmoid outputs", "training",
        choices=LOSSES,
        doc="`bce`: sigmoid cross-entropy on logits (the original); `mse`: on sigmoid outputs")
    learning_rate: float = setting(
        0.001, "Adam's initial rate", "training",
        doc="Adam's initial rate; multiplied by `--lr_decay_rate` every `--lr_decay_steps` "
            "steps (staircase)")
    lr_decay_steps: int = setting(1000, "steps between two decays of the rate", "training")
    lr_decay_rate: float = setting(
        0.96, "the rate is multiplied by this every --lr_decay_steps steps; 1: constant",
        "training")
    batch_size: int = setting(
        256, "images per step (the global batch, split across replicas)", "training",
        doc="images per step; training drops the last partial batch, as the original")
    epochs: int = setting(
        50, "total epochs; raise it and rerun to train a finished run longer", "training")
    seed: Optional[int] = setting(
        None, "random seed (default: drawn and recorded)", "training", parse=int,
        shown_default="drawn",
        doc="makes a run reproducible; a drawn seed is recorded in `run.json`")
    deterministic: bool = setting(
        False, "TensorFlow op determinism: the same --seed gives a bit-identical run on the "
               "same machine (slower)", "training", switch=True, hparam=False,
        doc="TensorFlow's op determinism: the same `--seed` gives a bit-identical run on the "
            "same machine (see [reproducibility](docs/reliability.md#reproducibility))")
    precision: str = setting(
        "auto", "mixed_bfloat16: compute in bfloat16, keep float32 weights; auto: "
                "mixed_bfloat16 when training on a CPU with AMX or AVX-512 bfloat16, else "
                "float32 (on a GPU too)", "training", choices=PRECISIONS,
        doc="`mixed_bfloat16`: compute in bfloat16, keep the weights (and codes, logits, "
            "losses) in float32; `float32`; `auto`: `mixed_bfloat16` when training on a CPU "
            "with AMX or AVX-512 bfloat16 instructions (measured faster with each), else "
            "`float32` (also on a GPU, where bfloat16 is unmeasured for this model) "
            "([speed](docs/speed.md))")
    # --- distribution
    distribute: str = setting(
        "none", "mirrored: every local GPU; multi_worker: the workers in TF_CONFIG; "
                "--batch_size stays the global batch, split across the replicas",
        GROUPS[3], choices=DISTRIBUTES,
        doc="`mirrored`: every local GPU; `multi_worker`: the machines in `TF_CONFIG` "
            "([several GPUs or machines](docs/distributed.md))")
    cpu_replicas: Optional[int] = setting(
        None, "with --distribute mirrored: train on N logical devices split from the CPU "
              "instead of the GPUs (to try the mirrored path without GPUs)", GROUPS[3],
        parse=int, metavar="N", hparam=False)
    # --- output
    model_dir: str = setting("mnist_training", "where the run is written", "output",
                             hparam=False,
                             doc="where the run is written ([what lands there](docs/"
                                 "reliability.md#what-lands-in-model_dir))")
    save_images: Optional[str] = setting(
        None, "write a PNG of test reconstructions to DIR after every epoch", "output",
        metavar="DIR", hparam=False)
    embedding_images: int = setting(
        10_000, "after training, write the codes of the first N test images (all of a "
                "smaller test split) for TensorBoard's projector; 0: none", "output",
        metavar="N", hparam=False,
        doc="after training, write the codes of the first N test images (all of a smaller "
            "test split) for TensorBoard's [projector](docs/tensorboard.md); `0`: none")
    # --- not a flag: the image size the model takes; None: the data's (run.json records it)
    image_shape: Optional[list[int]] = setting(
        None, "[H, W, C] of the model's input", "data", architecture=True,
        on_command_line=False, hparam=False)

    def validate(self) -> "Config":
        """Raises ConfigError for the first invalid setting; returns self with the
        --data_format alias in its Keras spelling (the one change it makes)."""
        for declared in dataclasses.fields(self):
            choices = declared.metadata["flag"].choices
            value = getattr(self, declared.name)
            if choices and value not in choices:
                raise ConfigError(f"unknown {declared.name} {value!r}: use one of "
                                  f"{', '.join(choices)}")
            # inf passes the range checks below, and config.json would not be JSON
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{declared.name} must be a finite number, got {value}")
        if self.data_format not in DATA_FORMATS:
            raise ConfigError(
                f"unknown data_format {self.data_format!r}: use NHWC or NCHW "
                "(or channels_last / channels_first)")
        self.data_format = DATA_FORMATS[self.data_format]
        if self.model not in CONV_MODELS:
            changed = [name for name in CONV_ONLY_FIELDS if name != "num_filters"
                       and getattr(self, name) != DEFAULTS[name]]
            if changed:
                raise ConfigError(f"{', '.join(changed)} appl{'y' if len(changed) > 1 else 'ies'} "
                                  f"to convolutional models, not {self.model}")
        if self.code_size is not None and self.code_size < 1:
            raise ConfigError(f"code_size must be >= 1 (the number of values in the code), "
                              f"got {self.code_size}")
        if self.kernel_size < 1:
            raise ConfigError(f"kernel_size must be >= 1, got {self.kernel_size}")
        if self.convs_per_block < 0:
            raise ConfigError(f"convs_per_block must be >= 0, got {self.convs_per_block}")
        if self.linear_path != "none" and (self.model != "convolutional" or not self.code_size):
            raise ConfigError(f"linear_path {self.linear_path} needs --model convolutional "
                              "and a --code_size (its code is the flat code)")
        if self.convs_per_block == 0 and self.downsample == "pool":
            raise ConfigError("convs_per_block 0 with downsample pool leaves the encoder without "
                              "convolutions: use --downsample strided, or at least 1 conv per block")
        if self.model == "variational" and self.code_l1:
            raise ConfigError("code_l1 applies to the deterministic models; the variational "
                              "model's KL term already regularises its codes (see --beta)")
        check_sizes("num_filters", self.num_filters)
        check_sizes("hidden_units", self.hidden_units)
        if self.normal_classes is not None:
            if (not self.normal_classes or len(set(map(str, self.normal_classes)))
                    != len(self.normal_classes)
                    or not all((isinstance(c, int) and c >= 0) or (isinstance(c, str) and c)
                               for c in self.normal_classes)):
                raise ConfigError(f"normal_classes must be distinct class names or labels >= 0 "
                                  f"such as 0,4, got {self.normal_classes}")
        if not 0 < self.anomaly_fpr < 1:
            raise ConfigError(f"anomaly_fpr must be in (0, 1) (0.01: 1% of normal images "
                              f"flagged), got {self.anomaly_fpr}")
        if self.dropout is not None and not 0 < self.dropout <= 1:
            raise ConfigError(
                f"dropout must be a keep probability in (0, 1], got {self.dropout}")
        checks = [
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.noise_factor >= 0, "noise_factor must be >= 0"),
            (self.code_l1 >= 0, "code_l1 must be >= 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0 < self.lr_decay_rate <= 1, "lr_decay_rate must be in (0, 1] (1: a constant rate)"),
            (self.lr_decay_steps >= 1, "lr_decay_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.seed is None or 0 <= self.seed < 2**32, "seed must be in [0, 2**32)"),
            (self.max_pixels >= 1, "max_pixels must be >= 1"),
            (self.anomaly_map_sigma >= 0, "anomaly_map_sigma must be >= 0 (0: no smoothing)"),
            (self.embedding_images >= 0, "embedding_images must be >= 0 (0: no projector)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.cache == "":
            raise ConfigError("cache must be memory, none or a folder, not empty")
        if self.cpu_replicas is not None:
            if self.distribute != "mirrored":
                raise ConfigError("cpu_replicas applies to --distribute mirrored only, "
                                  f"not {self.distribute}")
            if self.cpu_replicas < 1:
                raise ConfigError(f"cpu_replicas must be >= 1, got {self.cpu_replicas}")
            if self.cpu_replicas > self.batch_size:
                raise ConfigError(f"cpu_replicas {self.cpu_replicas} is more than batch_size "
                                  f"{self.batch_size}: every replica needs at least one image")
        return self

    def check_data(self, num_train: int) -> None:
        """Raises ConfigError if the loaded data cannot train this model: a batch larger
        than the training set, or images too small for the encoder's pooling blocks.
        `image_shape` must be set (a resolved config)."""
        if self.batch_size > num_train:
            raise ConfigError(f"batch_size {self.batch_size} is larger than the training set "
                              f"({plural(num_train, 'image')}): lower --batch_size")
        if self.model in CONV_MODELS:
            check_encoder_fits(*self.image_shape[:2], self.num_filters, self.kernel_size)

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def builder_options(self, builder: str) -> dict:
        """The settings declared as keyword arguments of `builder` (e.g. "conv_decoder")."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if builder in f.metadata["flag"].builders}

    def architecture(self) -> dict:
        """The settings that determine the weights' shapes (only those the model uses)."""
        unused = ("hidden_units",) if self.model in CONV_MODELS else CONV_ONLY_FIELDS
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS if name not in unused}

    def resolved(self, facts: "RunFacts") -> "Config":
        """The configuration a run trains with: these settings, with what `facts` found
        in place of what was left open (a new object; this one stays as asked)."""
        shape = list(facts.image_shape) if facts.image_shape else None
        # The classes as the label numbers they were found to be (names resolved).
        classes = self.normal_classes if facts.normal_classes is None else facts.normal_classes
        return dataclasses.replace(self, image_shape=shape, dataset=facts.dataset, seed=facts.seed,
                                   precision=facts.precision, normal_classes=classes,
                                   **(facts.chosen or {}))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> "Config":
        """Settings from JSON; keys of other versions are ignored. ConfigError, naming
        `source`, for anything but a JSON object."""
        values = json_object(text, source)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path) as f:
            return cls.from_json(f.read(), source=path)

    def save(self, path: str) -> None:
        """Writes atomically: a crash never leaves a half-written config.json."""
        write_text_atomic(path, self.to_json() + "\n")


def _declared(predicate) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config) if predicate(f.metadata["flag"]))


DEFAULTS = {name: getattr(Config(), name) for name in _declared(lambda flag: True)}
# Settings that change the weights' shapes: a model_dir trained with other values
# cannot be resumed.
ARCHITECTURE_FIELDS = _declared(lambda flag: flag.architecture)
# Settings of the conv builders only; the fully connected model must keep their defaults.
CONV_ONLY_FIELDS = _declared(lambda flag: flag.conv_only)
# Settings shown in TensorBoard's HParams tab: those that change the model or its training.
HPARAMS = _declared(lambda flag: flag.hparam)


@dataclass
class RunFacts:
    """What a run found out while running, recorded in run.json beside config.json:
    the images' [H, W, C], the dataset actually read (the MNIST sample when it stood in
    for an unreachable TFDS dataset) and a description of it, the seed (drawn when none
    was given) and the precision that `auto` picked."""
    image_shape: Optional[list[int]]
    dataset: Optional[str]
    data_source: Optional[str]
    seed: Optional[int]  # None only in a damaged run from before run.json existed
    precision: str
    # The architecture the model was built with (Config.architecture()), so that a
    # config.json edited afterwards is caught before its model is misread. None in runs
    # from before run.json existed.
    architecture: Optional[dict] = None
    # The labels trained on (--normal_classes; None: every image) and how many images
    # each split kept: {"train": n, "validation": n, "test": n}.
    normal_classes: Optional[list[int]] = None
    split_sizes: Optional[dict] = None
    # What the labels mean, where the data names them (a folder's class folders).
    class_names: Optional[list[str]] = None
    # How the images were read: "memory" (decoded once and held), "none" (decoded every
    # epoch) or a cache folder, chosen by --cache or, unasked, by their size; None for
    # arrays read whole (IDX files, the sample) and runs from before it was recorded.
    cache: Optional[str] = None
    # Settings chosen from a folder's images where the command line gave none
    # (image_defaults.py): {setting: value}, and why, one reason per group of them.
    chosen: Optional[dict] = None
    chosen_because: Optional[list[str]] = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "RunFacts":
        facts = cls(**{f.name: values.get(f.name) for f in dataclasses.fields(cls)})
        shape = facts.image_shape  # None: a hand-written record; the model tells it then
        if shape is not None and (not isinstance(shape, list) or len(shape) != 3 or not all(
                isinstance(size, int) and size >= 1 for size in shape)):
            raise ConfigError(f"{source} records an image shape that is not [H, W, C]: {shape!r}")
        if facts.seed is not None and not isinstance(facts.seed, int):
            raise ConfigError(f"{source} records a seed that is not an integer: {facts.seed!r}")
        if facts.architecture is not None and not isinstance(facts.architecture, dict):
            raise ConfigError(f"{source} records an architecture that is not an object")
        settings = {f.name for f in dataclasses.fields(Config)}
        if facts.chosen is not None and not (isinstance(facts.chosen, dict)
                                             and set(facts.chosen) <= settings):
            raise ConfigError(f"{source} records chosen settings that are not an object of "
                              f"settings: {facts.chosen!r}")
        return facts

    def check_settings(self, settings: "Config", source: str) -> None:
        """Refuses settings (config.json, at `source`) that disagree with the model this
        run built: an edited config.json would otherwise build, export or evaluate
        another model than the one its weights belong to."""
        if settings.image_shape is not None and settings.image_shape != self.image_shape:
            raise ConfigError(f"{source}: image_shape {settings.image_shape} is not the "
                              f"{self.image_shape} the run's model takes: restore it (null)")
        if self.architecture is None:
            return
        built = json.loads(json.dumps(settings.resolved(self).architecture()))
        for name, value in self.architecture.items():
            if built.get(name) != value:
                raise ConfigError(f"{source}: {name} is {built.get(name)!r}, but the run's "
                                  f"model was built with {value!r} (run.json records it): "
                                  f"restore {name}, or train a new run")

    @classmethod
    def load(cls, model_dir: str, config_file: str, facts_file: str) -> "RunFacts":
        """run.json of `model_dir`; for a run from before run.json existed, the same facts
        as its config.json recorded them."""
        path = os.path.join(model_dir, facts_file)
        if not os.path.exists(path):
            path = os.path.join(model_dir, config_file)
        with open(path) as f:
            return cls.from_dict(json_object(f.read(), path), path)

    def save(self, path: str) -> None:
        write_text_atomic(path, self.to_json() + "\n")


def json_object(text: str, source: str) -> dict:
    """The JSON object a run wrote into `source`; ConfigError, naming it, for anything
    else (not JSON, or `[]`, `null`, ...)."""
    try:
        values = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{source} is not JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source} holds {type(values).__name__}, not the object a run "
                          "writes there")
    return values


def check_sizes(name: str, sizes, allow_empty: bool = False) -> None:
    """Raises ConfigError unless `sizes` is a list of positive integers (and not empty)."""
    if not sizes and not allow_empty:
        raise ConfigError(f"{name} is empty: give at least one size, e.g. --{name} 16,8,8")
    bad = [s for s in sizes if not isinstance(s, int) or s < 1]
    if bad:
        raise ConfigError(f"{name} must be positive integers, got {list(sizes)}")


def check_encoder_fits(height: int, width: int, num_filters, kernel_size: int = 1) -> None:
    """Raises ConfigError if HxW images are too small for one halving per entry of
    `num_filters` (each block needs at least 2x2; odd sizes round up: 7 -> 4), or for
    kernel_size x kernel_size convs."""
    size = min(height, width)
    for block in range(len(num_filters)):
        if size < 2:
            least = 2 ** (len(num_filters) - 1) + 1  # halved (rounding up) to 2 at the last
            fewer = f", or --num_filters with at most {block} sizes" if block else ""
            raise ConfigError(
                f"{height}x{width} images are too small for {len(num_filters)} pooling blocks "
                f"(--num_filters {','.join(map(str, num_filters))}), which need at least "
                f"{least}x{least}: give --image_size {least}x{least} or larger{fewer}")
        size = -(-size // 2)
    if kernel_size > min(height, width):
        raise ConfigError(f"kernel_size {kernel_size} is larger than the {height}x{width} "
                          f"images: use --kernel_size {min(height, width)} or less")
