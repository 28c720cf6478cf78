"""--cache: streamed images (a folder's files, a TFDS dataset) decoded once, then read
back as raw pixels every epoch.

Decoding PNG or JPEG files takes a real share of the CPU beside the training step;
after one decoding pass the pixels come from memory (`--cache memory`, for data that
fits) or from a file (`--cache DIR`, for data that fits on disk but not in memory).
Training holds them in memory unasked when they fit comfortably (choose_cache), and
streams them otherwise or with `--cache none`.

A cache file holds one split: a .npy file (numpy's format, so `numpy.load` reads it
too) of uint8 (N, H, W, C), followed by the SHA-256 of those pixel bytes (32 bytes,
which numpy ignores), named after a hash of what it was made from: the image
shape and each file's path, size and modification time (a TFDS split: the dataset's
name, version, split and examples). Changed images (or another
--image_size) make a new file; an unchanged folder reuses the old one. The file is
written under a temporary name and renamed when whole, so a cache is never half there.
Before a file is reused its header, size and checksum are checked (one sequential read:
see benchmarks/RESULTS.md for its cost beside an epoch); a damaged file is said in one
line and made again. The folder is tagged with CACHEDIR.TAG (the cache directory
standard, which backup tools know), and a folder of images leaves a tagged folder out
of its listing, so a cache kept inside the data is not read as a class.
Batches are read with one positioned read per image: memory holds a batch, never the
file (the operating system's page cache keeps what it can of it, outside the process).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ..files import write_atomic, write_bytes_atomic, write_error
from .. import memory
from ..words import plural
from .folder import CACHE_TAG_FILE, SPLIT_NAMES
from .sources import Split, Splits, StreamedImages

if TYPE_CHECKING:
    import tensorflow as tf

MEMORY, NEVER = "memory", "none"  # --cache memory, --cache none (decode every epoch)
# Bump when the file's content changes meaning: old caches are then ignored, not misread.
CACHE_FORMAT = "tf-autoencoder cache 2"  # 2: the pixels' SHA-256 after them
DIGEST_BYTES = 32  # SHA-256
# https://bford.info/cachedir/: marks a folder as a cache (backup tools skip it; so does
# the listing of a folder of images, folder.walk).
TAG = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
       b"# This file is a cache directory tag created by tf-autoencoder (--cache).\n")


def read_npy_header(f) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the .npy file open as `f`, which is left at its data.
    ValueError if it is not one."""
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(f)
    return shape, dtype


def cache_file_damage(path: str, shape: tuple) -> str | None:
    """None if the cache file `path` holds uint8 images of `shape` (N, H, W, C) whole,
    with the checksum written with them; else what is wrong, in a few words."""
    try:
        with open(path, "rb") as f:
            try:
                found, dtype = read_npy_header(f)
            except ValueError as e:
                return f"its header is not a cache file's ({e})"
            if tuple(found) != tuple(shape) or dtype != np.uint8:
                return f"it holds {dtype} {tuple(found)}, not uint8 {tuple(shape)}"
            offset = f.tell()
            expected = offset + math.prod(shape) + DIGEST_BYTES
            size = os.fstat(f.fileno()).st_size
            if size != expected:
                return f"it is {size:,} bytes, not {expected:,} (cut short or grown)"
            digest = hashlib.sha256()
            left = math.prod(shape)
            while left:
                chunk = f.read(min(left, 8 * 2**20))
                if not chunk:
                    return "it was cut short while being read"
                digest.update(chunk)
                left -= len(chunk)
            if f.read(DIGEST_BYTES) != digest.digest():
                return "its pixels do not match the checksum written with them"
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    return None


class CachedImages(StreamedImages):
    """The images of one split in a cache file (StreamedImages: indexing reads just those
    images); `gather` reads a batch inside a tf.data pipeline."""

    def __init__(self, path: str, records: np.ndarray | None = None):
        self.path = path
        with open(path, "rb") as f:
            shape, _ = read_npy_header(f)
            self._offset = f.tell()
        self.file_shape = tuple(shape)  # of the whole file, whichever records this holds
        self.image_shape = tuple(shape[1:])
        self._record = math.prod(self.image_shape)
        # Which of the file's images this object holds (subset() keeps some of them).
        self.records = np.arange(shape[0]) if records is None else np.asarray(records)
        self._fd = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, kept) -> "CachedImages":
        return CachedImages(self.path, self.records[kept])

    def _read(self, indices: np.ndarray) -> np.ndarray:
        with self._lock:  # tf.data calls from several threads; one descriptor for all
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(indices), self._record), np.uint8)
        for row, record in enumerate(self.records[indices]):
            start = self._offset + int(record) * self._record
            pixels = os.pread(self._fd, self._record, start)
            if len(pixels) != self._record:  # the file was cut short under the run
                raise ValueError(f"the cache file {self.path} is cut short")
            out[row] = np.frombuffer(pixels, np.uint8)
        return out.reshape(len(indices), *self.image_shape)

    def gather(self, indices: "tf.Tensor") -> "tf.Tensor":
        """uint8 (n, H, W, C) images at `indices` (an int64 tensor (n,)), for tf.data."""
        import tensorflow as tf

        images = tf.numpy_function(self._read, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None, *self.image_shape))

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def choose_cache(splits: Splits, asked: str | None) -> tuple[str, str]:
    """How training reads streamed splits (a folder's, a TFDS dataset's): a --cache value,
    and a line saying which and why. What --cache asked for; else MEMORY when their
    decoded pixels fit comfortably (memory.fits_comfortably), else NEVER: streamed."""
    if asked == MEMORY:
        return asked, "Images: decoded once and held in memory (--cache memory)"
    if asked == NEVER:
        return asked, "Images: streamed, decoded anew every epoch (--cache none)"
    if asked is not None:
        return asked, f"Images: decoded once into cache files in {asked} (--cache {asked})"
    needed = sum(_size(getattr(splits, name).images) for name in SPLIT_NAMES)
    available = memory.available_bytes()
    fits = memory.fits_comfortably(needed, available)
    why = (f"{_amount(needed)} decoded, {'at most' if fits else 'more than'} "
           f"{memory.HELD_SHARE:.0%} of the {_amount(available)} of memory available")
    if fits:
        return MEMORY, (f"Images: decoded once and held in memory ({why}; --cache none "
                        "streams them instead)")
    return NEVER, (f"Images: streamed, decoded anew every epoch ({why}; --cache DIR "
                   "decodes them once into files there)")


def _amount(size: int) -> str:
    """'1.9 KiB', '47.0 MiB', '30.2 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size / 2**10:,.1f} KiB"


def cache_splits(splits: Splits, cache: str | None, log=print) -> Splits:
    """The streamed splits with their pixels decoded once: into memory
    (MEMORY) or into files in the folder `cache`; unchanged for None and NEVER.
    tensorflow.errors.InvalidArgumentError if an image cannot be decoded."""
    if cache in (None, NEVER):
        return splits
    if cache == MEMORY:
        return dataclasses.replace(splits, **{
            name: Split(getattr(splits, name).images[:], getattr(splits, name).labels)
            for name in SPLIT_NAMES})
    paths = prepare_folder(cache, splits)
    cached = {}
    for name in SPLIT_NAMES:
        split = getattr(splits, name)
        damage = (cache_file_damage(paths[name], split.images.shape)
                  if os.path.exists(paths[name]) else None)
        if damage:
            log(f"The cache file {paths[name]} is damaged ({damage}): decoding the {name} "
                "split's images into it again")
        if os.path.exists(paths[name]) and not damage:
            log(f"Reading the {name} split's {plural(len(split), 'image')} from the cache "
                f"{paths[name]}")
        else:
            log(f"Caching the {name} split's {plural(len(split), 'image')} "
                f"({_size(split.images) / 2**20:,.1f} MiB) in {paths[name]}")
            write_cache(split.images, paths[name])
        cached[name] = Split(CachedImages(paths[name]), split.labels)
    return dataclasses.replace(splits, **cached)


def prepare_folder(cache: str, splits: Splits) -> dict[str, str]:
    """Each split's cache file in the folder `cache`, which is created; ConfigError if it
    is a file, or if its disk lacks the space for the files still to write."""
    if os.path.exists(cache) and not os.path.isdir(cache):
        raise ConfigError(f"--cache {cache} is a file: give a folder (created if missing)")
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        raise write_error(cache, e) from None
    paths = {name: cache_path(getattr(splits, name).images, name, cache) for name in SPLIT_NAMES}
    needed = sum(_size(getattr(splits, name).images) for name, path in paths.items()
                 if not os.path.exists(path))
    free = shutil.disk_usage(cache).free
    if needed > free:
        raise ConfigError(f"--cache {cache}: the decoded images need {needed / 2**30:.1f} GiB, "
                          f"and its disk has {free / 2**30:.1f} GiB free: free some space, "
                          "or give a folder on another disk")
    tag_folder(cache)
    return paths


def tag_folder(cache: str) -> None:
    """Makes the folder `cache` if missing and tags it as a cache (CACHEDIR.TAG), so that
    the listing of a folder of images that holds it leaves it out."""
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        raise write_error(cache, e) from None
    if not os.path.exists(os.path.join(cache, CACHE_TAG_FILE)):
        write_bytes_atomic(os.path.join(cache, CACHE_TAG_FILE), TAG)


def _size(images) -> int:
    return math.prod(images.shape)


def cache_path(images, split: str, cache: str) -> str:
    """Where the cache file of `images` (FileImages or TfdsImages) is, named after what
    it is made from (their fingerprint)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{images.image_shape}\n".encode())
    images.fingerprint(digest)
    return os.path.join(cache, f"{split}-{digest.hexdigest()[:20]}.npy")


def write_cache(images, path: str) -> None:
    """Decodes `images` (FileImages or TfdsImages) into the cache file `path`, in order,
    followed by their checksum, whole or not at all."""
    def fill(f):
        np.lib.format.write_array_header_2_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": images.shape})
        digest = hashlib.sha256()
        for batch in images.dataset().batch(256).as_numpy_iterator():
            pixels = batch.tobytes()
            digest.update(pixels)
            f.write(pixels)
        f.write(digest.digest())

    write_atomic(path, fill)
