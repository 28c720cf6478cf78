"""One plain object holding every setting of a run, with validation and JSON round-trip."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

from .errors import ConfigError
from .files import write_text_atomic

MODELS = ("convolutional", "fully_connected", "variational")
CONV_MODELS = ("convolutional", "variational")  # built from conv_encoder / conv_decoder
DOWNSAMPLES = ("pool", "strided")
# transpose: kernel_size x kernel_size stride-2 transposed conv (the post, 3x3);
# transpose_2x2: 2x2 stride-2 transposed conv, no overlap; resize: nearest resize + conv.
UPSAMPLES = ("transpose", "transpose_2x2", "resize")
LOSSES = ("bce", "mse")
# auto: mixed_bfloat16 where the training device computes bfloat16 natively, else float32
# (resolved when training starts: see precision.py).
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
# none: one device; mirrored: every local GPU (or --cpu_replicas logical CPUs);
# multi_worker: the machines TF_CONFIG lists.
DISTRIBUTES = ("none", "mirrored", "multi_worker")
# --data_format accepts the TensorFlow names and the Keras names; we store the Keras one.
DATA_FORMATS = {
    "NHWC": "channels_last",
    "NCHW": "channels_first",
    "channels_last": "channels_last",
    "channels_first": "channels_first",
}
# Settings that change the weights' shapes: a model_dir trained with other values
# cannot be resumed.
ARCHITECTURE_FIELDS = ("model", "num_filters", "hidden_units", "downsample", "upsample",
                       "convs_per_block", "kernel_size", "output_layer", "code_size",
                       "image_shape")
# Settings of the conv builders only; the fully connected model must keep their defaults.
CONV_ONLY_FIELDS = ("num_filters", "downsample", "upsample", "convs_per_block", "kernel_size",
                    "output_layer")


@dataclass
class Config:
    # Model
    model: str = "convolutional"
    num_filters: list[int] = field(default_factory=lambda: [16, 8, 8])
    hidden_units: list[int] = field(default_factory=lambda: [128, 64, 32])
    data_format: str = "channels_last"
    dropout: Optional[float] = None  # keep probability, as in the original; None: no dropout
    weight_decay: float = 1e-5
    downsample: str = "pool"  # encoder: 2x2 max pooling, or a stride-2 3x3 conv
    upsample: str = "transpose"  # decoder: stride-2 transposed conv, or nearest resize + 3x3 conv
    convs_per_block: int = 2  # 'same' ReLU convs before each halving (0: strided only)
    kernel_size: int = 3  # of every conv and transposed conv but transpose_2x2's
    output_layer: bool = True  # a linear conv to the image's channels after the last block
    code_size: Optional[int] = None  # a flat code of this many values; None: the last map
    code_l1: float = 0.0  # L1 penalty on the code: code_l1 * mean over the batch of sum |code|
    beta: float = 1.0  # variational: weight of the KL term
    # Data
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    noise_factor: float = 0.0
    # Training
    loss: str = "bce"
    learning_rate: float = 0.001
    lr_decay_steps: int = 1000
    lr_decay_rate: float = 0.96
    batch_size: int = 256
    epochs: int = 50
    seed: Optional[int] = None
    deterministic: bool = False  # TensorFlow's op determinism: bit-identical reruns on CPU
    precision: str = "auto"  # float32, mixed_bfloat16 (weights stay float32), or auto
    distribute: str = "none"  # tf.distribute strategy: none, mirrored or multi_worker
    cpu_replicas: Optional[int] = None  # mirrored: split the CPU into this many logical devices
    # Output
    model_dir: str = "mnist_training"
    save_images: Optional[str] = None
    embedding_images: int = 10_000  # test images whose codes the projector shows; 0: none
    # Filled in when the data is loaded: what a run actually trained on.
    image_shape: Optional[list[int]] = None  # [H, W, C]
    data_source: Optional[str] = None

    def validate(self) -> "Config":
        """Normalises aliases and raises ConfigError for the first invalid setting."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}: use one of {', '.join(MODELS)}")
        if self.data_format not in DATA_FORMATS:
            raise ConfigError(
                f"unknown data_format {self.data_format!r}: use NHWC or NCHW "
                "(or channels_last / channels_first)")
        self.data_format = DATA_FORMATS[self.data_format]
        if self.downsample not in DOWNSAMPLES:
            raise ConfigError(f"unknown downsample {self.downsample!r}: use pool or strided")
        if self.upsample not in UPSAMPLES:
            raise ConfigError(f"unknown upsample {self.upsample!r}: use transpose or resize")
        if self.model not in CONV_MODELS:
            changed = [name for name in CONV_ONLY_FIELDS[1:]
                       if getattr(self, name) != getattr(Config, name)]
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
        if self.convs_per_block == 0 and self.downsample == "pool":
            raise ConfigError("convs_per_block 0 with downsample pool leaves the encoder without "
                              "convolutions: use --downsample strided, or at least 1 conv per block")
        if self.model == "variational" and self.code_l1:
            raise ConfigError("code_l1 applies to the deterministic models; the variational "
                              "model's KL term already regularises its codes (see --beta)")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}: use bce (sigmoid cross-entropy) or mse")
        check_sizes("num_filters", self.num_filters)
        check_sizes("hidden_units", self.hidden_units)
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
            (self.embedding_images >= 0, "embedding_images must be >= 0 (0: no projector)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: use one of "
                              f"{', '.join(PRECISIONS)}")
        if self.distribute not in DISTRIBUTES:
            raise ConfigError(f"unknown distribute {self.distribute!r}: use one of "
                              f"{', '.join(DISTRIBUTES)}")
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
        `image_shape` must be set."""
        if self.batch_size > num_train:
            raise ConfigError(f"batch_size {self.batch_size} is larger than the training set "
                              f"({num_train} images): lower --batch_size")
        if self.model in CONV_MODELS:
            check_encoder_fits(*self.image_shape[:2], self.num_filters, self.kernel_size)

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def architecture(self) -> dict:
        """The settings that determine the weights' shapes."""
        arch = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
        # Only the settings that the chosen model uses matter.
        unused = ("hidden_units",) if self.model in CONV_MODELS else CONV_ONLY_FIELDS
        for name in unused:
            arch.pop(name)
        return arch

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path) as f:
            return cls.from_json(f.read())

    def save(self, path: str) -> None:
        """Writes atomically: a crash never leaves a half-written config.json."""
        write_text_atomic(path, self.to_json() + "\n")


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
            raise ConfigError(
                f"{height}x{width} images are too small for {len(num_filters)} pooling blocks "
                f"(--num_filters {','.join(map(str, num_filters))}): give at most {block} sizes")
        size = -(-size // 2)
    if kernel_size > min(height, width):
        raise ConfigError(f"kernel_size {kernel_size} is larger than the {height}x{width} "
                          f"images: use --kernel_size {min(height, width)} or less")
