"""A folder of image files as a data source: listed, checked from the files' headers,
split, and read by tf.data only as training goes (never held whole in memory).

Layouts (decided by what the folder holds):
  DIR/<class>/**/*.png      labels from the sorted class folder names
  DIR/*.jpg                 no labels
  DIR/train|validation|test/ with either layout inside: the splits as the user fixed them
Without split folders, a file's split follows from a hash of its path relative to DIR
(split_of), so adding files never moves an old one to another split. A split folder
that is missing takes the files of train/ that the hash gives it.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import MAX_PIXELS
from ..errors import ConfigError, DataError
from ..words import plural
from .sources import IDX_FILES, Split, Splits, StreamedImages

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_NAMES = ("train", "validation", "test")
# The hash rule's shares: test 1/7 and validation 1/14 of the files, the proportions of
# MNIST's 10,000 test and 5,000 validation images among its 70,000.
TEST_SHARE = 1 / 7
VALIDATION_SHARE = 1 / 14


def split_of(relative_path: str) -> str:
    """'train', 'validation' or 'test' from a hash of the path (with / separators): the
    same for a file whatever else the folder holds."""
    digest = hashlib.sha256(relative_path.replace(os.sep, "/").encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < TEST_SHARE else "validation" if u < TEST_SHARE + VALIDATION_SHARE \
        else "train"


def is_image_folder(path: str) -> bool:
    """Whether `path` is a folder of image files rather than of IDX files: it holds no
    IDX file of the four (decided by content, not by a flag)."""
    names = set(os.listdir(path))
    return not any(stem in names or stem + ".gz" in names for stem in IDX_FILES.values())


@dataclass
class Listed:
    path: str
    relative: str
    label: int


# Marks a --cache folder (cache.py writes it): a listing leaves such a folder out.
CACHE_TAG_FILE = "CACHEDIR.TAG"


def is_cache_folder(path: str) -> bool:
    """Whether `path` is a folder tagged as a cache (a --cache folder kept inside the
    data), which a listing leaves out."""
    return os.path.isfile(os.path.join(path, CACHE_TAG_FILE))


def walk(root: str, seen: set, hidden: list | None = None) -> list[str]:
    """Every file under `root`, sorted, following links, but hidden ones (their names
    start with a dot: added to `hidden` if given) and tagged cache folders; DataError for
    a symlink loop or a folder that cannot be read."""
    real = os.path.realpath(root)
    if real in seen:
        raise DataError(f"{root} leads back to {real}, a folder already listed (a symlink "
                        "loop, or a second link to one folder): remove the link")
    seen.add(real)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {root}: {e.strerror}") from None
    files = []
    for entry in entries:
        if entry.name.startswith("."):
            if hidden is not None:
                hidden.append(entry.path)
            continue
        try:
            is_dir = entry.is_dir()
        except OSError as e:  # ELOOP: a link that points at itself
            raise DataError(f"cannot follow {entry.path}: {e.strerror} (a symlink loop?)") from None
        if is_dir and is_cache_folder(entry.path):
            continue
        files.extend(walk(entry.path, seen, hidden) if is_dir else [entry.path])
    return files


def _subfolders(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
                  and not is_cache_folder(e.path))


def _list_layout(folder: str, root: str, classes: list[str] | None, seen: set
                 ) -> tuple[list[Listed], list[str], list[str] | None]:
    """The files of one folder of either layout: (image files, skipped files, the class
    names: `classes` if given, else this folder's; None when flat)."""
    subfolders = _subfolders(folder)
    listed, skipped = [], []

    def add(path, label):
        if path.lower().endswith(IMAGE_EXTENSIONS):
            listed.append(Listed(path, os.path.relpath(path, root), label))
        else:
            skipped.append(path)

    if not subfolders:
        for path in walk(folder, seen, skipped):
            add(path, -1)
        return listed, skipped, None
    beside = [e.path for e in os.scandir(folder) if e.is_file()]
    stray = [path for path in beside if path.lower().endswith(IMAGE_EXTENSIONS)
             and not os.path.basename(path).startswith(".")]
    skipped += [path for path in beside if path not in stray]
    skipped += [e.path for e in os.scandir(folder) if e.is_dir() and e.name.startswith(".")]
    if stray:
        raise DataError(f"{folder} holds class folders and also images beside them (e.g. "
                        f"{sorted(stray)[0]}): move those into a class folder")
    classes = classes if classes is not None else subfolders
    for name in subfolders:
        if name not in classes:
            raise DataError(f"{os.path.join(folder, name)} is a class that train/ does not "
                            f"have (it has {', '.join(classes)})")
        for path in walk(os.path.join(folder, name), seen, skipped):
            add(path, classes.index(name))
    return listed, skipped, classes


def list_folder(root: str) -> tuple[dict[str, list[Listed]], list[str] | None, int]:
    """The image files of each split, the class names (None: no labels) and how many
    files were skipped as not images (by their extension) or hidden."""
    if not os.listdir(root):
        raise DataError(f"data_dir {root} is empty: give a folder of images (DIR/<class>/"
                        "*.png, DIR/*.png, or DIR/train|validation|test/)")
    seen: set = set()
    named = [name for name in SPLIT_NAMES if os.path.isdir(os.path.join(root, name))]
    splits: dict[str, list[Listed]] = {name: [] for name in SPLIT_NAMES}
    if named:
        if "train" not in named:
            raise DataError(f"{root} has {'/, '.join(named)}/ but no train/: the training "
                            "images go in train/")
        listed, skipped, classes = _list_layout(os.path.join(root, "train"), root, None, seen)
        skipped += [e.path for e in os.scandir(root) if e.is_file()]  # beside the splits
        for item in listed:  # a missing split folder: its share of train/ by the hash
            share = split_of(os.path.relpath(item.path, os.path.join(root, "train")))
            splits[share if share not in named else "train"].append(item)
        for name in named[1:]:
            more, more_skipped, theirs = _list_layout(os.path.join(root, name), root, classes,
                                                      seen)
            if (theirs is None) != (classes is None):
                raise DataError(f"{os.path.join(root, name)} and {os.path.join(root, 'train')} "
                                "differ in layout: give both class folders, or neither")
            splits[name] = more
            skipped += more_skipped
    else:
        listed, skipped, classes = _list_layout(root, root, None, seen)
        for item in listed:
            splits[split_of(item.relative)].append(item)
    if not any(splits.values()):
        raise DataError(f"data_dir {root} holds no image files ({plural(len(skipped), 'other file')}; "
                        f"images end in {', '.join(IMAGE_EXTENSIONS)}), nor the four IDX "
                        f"files ({', '.join(IDX_FILES.values())}, gzipped or not)")
    return splits, classes, len(skipped)


def _header(path: str, max_pixels: int) -> tuple[int, int, int, bool]:
    """(height, width, channels, simple) from the file's header, without decoding its
    pixels (images.Header: the size upright, the channels the preparation gives)."""
    from ..images import check_pixels

    header = check_pixels(path, max_pixels)  # one opening of the file
    return header.height, header.width, header.channels, header.simple


def read_headers(paths: list[str], max_pixels: int = MAX_PIXELS, skip_bad: bool = False
                 ) -> tuple[list, list[str]]:
    """Each file's (height, width, channels), read in parallel (None for a file skipped
    with `skip_bad`), and the files skipped. DataError naming the first bad file."""
    def one(path):
        try:
            return _header(path, max_pixels)
        except OSError as e:
            if e.errno is None:  # Pillow's word for a header it cannot parse
                return f"{path}: damaged image header ({e})"
            return f"cannot read {path}: {e.strerror}"
        except ValueError as e:
            return f"{path}: {e}"

    # A task per 1,024 files: a future per file (ThreadPoolExecutor.map ignores its
    # chunksize) took about a kB each, 100 MB for 100,000 files.
    chunks = [paths[i:i + 1024] for i in range(0, len(paths), 1024)]
    with concurrent.futures.ThreadPoolExecutor(min(32, (os.cpu_count() or 1) * 4)) as pool:
        headers = [h for chunk in pool.map(lambda chunk: [one(p) for p in chunk], chunks)
                   for h in chunk]
    bad = [(path, h) for path, h in zip(paths, headers) if isinstance(h, str)]
    if bad and not skip_bad:
        raise DataError(f"{bad[0][1]} (--skip_bad_images skips such files)")
    return [None if isinstance(h, str) else h for h in headers], [p for p, _ in bad]


def check_same(headers: list, paths: list[str], image_size, channels
               ) -> tuple[tuple[int, int, int], str]:
    """The images' shape (H, W, C) after --image_size / --channels, and how to read them
    (preparation.READERS): "plain" when every file is simple and of that shape already,
    "simple" when every file is simple, else "any"; ConfigError (a usage error: a flag
    fixes it) naming two files that differ where these are not given."""
    first = headers[0]
    for header, path in zip(headers, paths):
        if image_size is None and header[:2] != first[:2]:
            raise ConfigError(f"images differ in size: {paths[0]} is {first[0]}x{first[1]}, "
                            f"{path} is {header[0]}x{header[1]} (HxW): give --image_size HxW")
        if channels is None and header[2] != first[2]:
            raise ConfigError(f"images differ in colour: {paths[0]} has {first[2]} channel(s), "
                            f"{path} has {header[2]}: give --channels 1 or 3")
    shape = (*(image_size or first[:2]), channels or first[2])
    if not all(header[3] for header in headers):
        return shape, "any"
    return shape, "plain" if all(tuple(header[:3]) == shape for header in headers) else "simple"


class FileImages(StreamedImages):
    """The images of one split as files (StreamedImages: indexing reads just those
    files). The training pipeline reads them through tf.data (dataset), each prepared by
    preparation.prepare_file. reader: what the files' headers allow (check_same): the
    same pixels each way, fewer steps for simpler files."""

    def __init__(self, paths: list[str], shape: tuple[int, int, int], reader: str = "any"):
        self.paths = list(paths)
        self.image_shape = tuple(shape)
        self.reader = reader
        self._tensor = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, kept) -> "FileImages":
        """The files that `kept` (a boolean mask or indices) chooses, still unread."""
        return FileImages(np.asarray(self.paths)[kept].tolist(), self.image_shape, self.reader)

    def fingerprint(self, digest) -> None:
        """Feeds `digest` (a hashlib object) what the images are: each file's path, size
        and modification time (the cache's name)."""
        for path in self.paths:
            try:
                stat = os.stat(path)
            except OSError as e:
                raise DataError(f"cannot read {path}: {e.strerror}") from None
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())

    def _read(self, indices: np.ndarray) -> np.ndarray:
        images = self.dataset(indices).batch(256)
        return np.concatenate([batch.numpy() for batch in images])

    def dataset(self, indices=None) -> "tf.data.Dataset":
        """uint8 (H, W, C) images of the files at `indices` (int64, a tensor or a dataset
        of scalars; default: every file, in order), decoded in parallel and in order."""
        import tensorflow as tf

        # One tensor of the paths, which every dataset made here captures by reference:
        # a constant made per call would be copied into each epoch's pipeline (50 epochs
        # of 100,000 paths took 500 MB).
        if self._tensor is None:
            self._tensor = tf.constant(self.paths)
        paths = self._tensor
        if indices is None:
            indices = tf.data.Dataset.range(len(self.paths))
        elif not isinstance(indices, tf.data.Dataset):
            indices = tf.data.Dataset.from_tensor_slices(tf.constant(indices, tf.int64))
        from ..preparation import prepare_file

        shape, reader = self.image_shape, self.reader
        return indices.map(lambda i: prepare_file(tf.gather(paths, i), shape, reader),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def bad_files(self) -> list[int]:
        """The indices of the files that cannot be read or decoded as training reads them
        (a pass over them all): plain files must still be of the listed size."""
        import tensorflow as tf

        from ..preparation import prepare_file

        paths, shape, reader = tf.constant(self.paths), self.image_shape, self.reader
        decoded = tf.data.Dataset.range(len(self.paths)).map(
            # A value of the pixels, not their shape, which is static and lets TensorFlow
            # prune the decoding away.
            lambda i: (i, tf.reduce_max(prepare_file(tf.gather(paths, i), shape, reader))),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        good = {int(i) for i, _ in decoded.ignore_errors().as_numpy_iterator()}
        return [i for i in range(len(self.paths)) if i not in good]


def drop_bad_files(splits: Splits, log=print) -> Splits:
    """--skip_bad_images: the splits without the files whose pixels cannot be decoded
    (each file is decoded once), and one line counting them."""
    dropped = []
    for name in SPLIT_NAMES:
        split = getattr(splits, name)
        bad = set(split.images.bad_files())
        if bad:
            keep = [i for i in range(len(split.images)) if i not in bad]
            dropped += [split.images.paths[i] for i in sorted(bad)]
            setattr(splits, name, Split(split.images.subset(keep), split.labels[keep]))
            if name == "test" and splits.masks is not None:  # the masks follow their images
                splits.masks = [splits.masks[i] for i in keep]
            if not keep:
                raise DataError(f"no image of the {name} split can be decoded, e.g. "
                                f"{dropped[-1]}")
    if dropped:
        log(f"Skipped {plural(len(dropped), 'image')} that cannot be decoded (--skip_bad_images), "
            f"e.g. {dropped[0]}")
    return splits


def first_bad_file(splits: Splits) -> str | None:
    """The first file of the splits that cannot be decoded, or None (a pass over them)."""
    for name in SPLIT_NAMES:
        images = getattr(splits, name).images
        if isinstance(images, FileImages):
            bad = images.bad_files()
            if bad:
                return images.paths[bad[0]]
    return None


def load_image_folder(root: str, image_size=None, channels=None, max_pixels: int = MAX_PIXELS,
                      skip_bad: bool = False, log=print) -> Splits:
    """The splits of a folder of images, as files (FileImages), after checking every
    file's header. image_size: (H, W) to resize to; channels: 1 or 3 (default: the
    images' own, which must then agree)."""
    listed, classes, other = list_folder(root)
    order = [item for name in SPLIT_NAMES for item in listed[name]]
    headers, bad = read_headers([item.path for item in order], max_pixels, skip_bad)
    if other:
        log(f"Skipped {plural(other, 'file')} in {root}: not images (by their extension: "
            f"{', '.join(IMAGE_EXTENSIONS)}) or hidden (a name that starts with a dot)")
    empty = [name for label, name in enumerate(classes or [])
             if not any(item.label == label for items in listed.values() for item in items)]
    if empty:
        log(f"{plural(len(empty), 'class folder')} without images: "
            f"{', '.join(os.path.join(root, name) for name in empty)} (still a class, with "
            "its label, that the model never sees): add images, or remove the folder")
    if bad:
        log(f"Skipped {plural(len(bad), 'image file')} whose header cannot be read "
            f"(--skip_bad_images), e.g. {bad[0]}")
    kept = {id(item): header for item, header in zip(order, headers) if header is not None}
    for name in SPLIT_NAMES:
        listed[name] = [item for item in listed[name] if id(item) in kept]
    order = [item for item in order if id(item) in kept]
    if not order:
        raise DataError(f"data_dir {root} holds no readable image")
    shape, reader = check_same([kept[id(item)] for item in order],
                              [item.path for item in order], image_size, channels)
    for name in SPLIT_NAMES:
        if not listed[name]:
            raise DataError(f"data_dir {root} gives the {name} split no image "
                            f"({plural(len(order), 'image')} in all): add images, or give a "
                            f"{name}/ folder")
    splits = {name: Split(FileImages([item.path for item in items], shape, reader),
                          np.array([item.label for item in items], np.int64))
              for name, items in listed.items()}
    described = f"image files in {root}"
    if classes:
        described += f" ({len(classes)} classes: {', '.join(classes)})"
    return Splits(**splits, source=described, name="folder", class_names=classes)
