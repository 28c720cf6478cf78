"""The MVTec AD layout (Bergmann et al., CVPR 2019) as a data source: one category of
defect-free training images, test images by defect type, and a mask per defective image.

  CATEGORY/train/good/*.png                        what is normal: training and validation
  CATEGORY/test/good/*.png                         defect-free test images
  CATEGORY/test/<defect>/*.png                     defective test images, by type
  CATEGORY/ground_truth/<defect>/<name>_mask.png   each one's mask: the defect's pixels white

Training takes train/good but the share of it that the hash rule (folder.split_of) gives
validation; the test split takes test/*, its classes "good" (label 0, the normal class)
and the defect folders' names in sorted order. A mask goes through the one preparation as
its image does (same crop and resize), then is binarised (at half the white level), so
mask and image stay aligned at any --image_size.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import MAX_PIXELS
from ..errors import DataError, LayoutError
from ..words import plural
from .folder import (IMAGE_EXTENSIONS, FileImages, check_same, is_cache_folder, read_headers,
                     split_of, walk)
from .sources import Split, Splits

NORMAL = "good"
MASK_SUFFIX = "_mask.png"
GROUND_TRUTH = "ground_truth"


def _subfolders(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
                  and not is_cache_folder(e.path))


def is_mvtec_layout(root: str) -> bool:
    """Whether `root` is laid out as an MVTec AD category: train/ holds a good/ folder and
    nothing else, beside a test/ folder, and either ground_truth/ or a test/ folder other
    than good/ (without these it is the plain train|test layout of folder.py)."""
    train, test = os.path.join(root, "train"), os.path.join(root, "test")
    if not (os.path.isdir(os.path.join(train, NORMAL)) and os.path.isdir(test)):
        return False
    if _subfolders(train) != [NORMAL]:
        return False
    return os.path.isdir(os.path.join(root, GROUND_TRUTH)) or bool(
        set(_subfolders(test)) - {NORMAL})


def _images(folder: str) -> list[str]:
    return [path for path in walk(folder, set()) if path.lower().endswith(IMAGE_EXTENSIONS)]


def mask_path(root: str, image: str, defect: str) -> str:
    """Where the mask of test/<defect>/<name>.<ext> lies: ground_truth/<defect>/<name>_mask.png
    (subfolders kept)."""
    relative = os.path.relpath(image, os.path.join(root, "test", defect))
    return os.path.join(root, GROUND_TRUTH, defect, os.path.splitext(relative)[0] + MASK_SUFFIX)


def list_mvtec(root: str) -> tuple[dict[str, list[str]], dict[str, list[int]], list[str],
                                   list[str | None]]:
    """(image paths per split, labels per split, class names, the test images' mask paths:
    None for a good one). LayoutError for a category that breaks the layout's rules
    (a defect folder without masks, an image without its mask); DataError for one
    without images to train on."""
    if os.path.isdir(os.path.join(root, "validation")):
        raise LayoutError(f"{root} is laid out as an MVTec AD category and also has validation/: "
                        "its validation images are a share of train/good; move them into "
                        "train/good")
    training = _images(os.path.join(root, "train", NORMAL))
    if not training:
        raise DataError(f"{os.path.join(root, 'train', NORMAL)} holds no image: the MVTec AD "
                        "layout trains on the defect-free images there")
    test_root = os.path.join(root, "test")
    defects = [name for name in _subfolders(test_root) if name != NORMAL]
    classes = [NORMAL] + defects
    paths = {"train": [], "validation": [], "test": []}
    labels = {"train": [], "validation": [], "test": []}
    for path in training:
        share = split_of(os.path.relpath(path, os.path.join(root, "train")))
        name = "validation" if share == "validation" else "train"
        paths[name].append(path)
        labels[name].append(0)
    masks: list[str | None] = []
    for label, name in enumerate(classes):
        folder = os.path.join(test_root, name)
        images = _images(folder) if os.path.isdir(folder) else []
        if name != NORMAL and images:
            truth = os.path.join(root, GROUND_TRUTH, name)
            if not os.path.isdir(truth) or not _images(truth):
                raise LayoutError(
                    f"{folder} holds {plural(len(images), 'defective image')} but {truth} holds "
                    f"no masks: add {os.path.join(truth, '<name>' + MASK_SUFFIX)} for each "
                    "(the defect's pixels white), as MVTec AD does")
            for image in images:
                mask = mask_path(root, image, name)
                if not os.path.isfile(mask):
                    raise LayoutError(f"{image} has no mask: expected {mask}")
                masks.append(mask)
        else:
            masks += [None] * len(images)
        paths["test"] += images
        labels["test"] += [label] * len(images)
    return paths, labels, classes, masks


def load_mvtec(root: str, image_size=None, channels=None, max_pixels: int = MAX_PIXELS,
               skip_bad: bool = False, log=print) -> Splits:
    """The splits of an MVTec AD category (FileImages), after checking every image's and
    mask's header: a mask must be the size of its image. The Splits carry the masks'
    paths (`masks`, aligned with the test split) and "good" as the normal class."""
    paths, labels, classes, masks = list_mvtec(root)
    order = [(name, i) for name in ("train", "validation", "test") for i in range(len(paths[name]))]
    headers, bad = read_headers([paths[name][i] for name, i in order], max_pixels, skip_bad)
    if bad:
        log(f"Skipped {plural(len(bad), 'image file')} whose header cannot be read "
            f"(--skip_bad_images), e.g. {bad[0]}")
    kept = {key: header for key, header in zip(order, headers) if header is not None}
    test_kept = [i for i in range(len(paths["test"])) if ("test", i) in kept]
    mask_headers, _ = read_headers([masks[i] for i in test_kept if masks[i]], max_pixels)
    sizes = iter(mask_headers)
    for i in test_kept:
        if masks[i] is None:
            continue
        mask_size, image_size_found = next(sizes)[:2], kept[("test", i)][:2]
        if mask_size != image_size_found:
            raise LayoutError(f"the mask {masks[i]} is {mask_size[0]}x{mask_size[1]} but its image "
                            f"{paths['test'][i]} is {image_size_found[0]}x{image_size_found[1]} "
                            "(HxW): a mask must be the size of its image")
    chosen = {name: [i for i in range(len(paths[name])) if (name, i) in kept]
              for name in paths}
    for name in paths:
        if not chosen[name]:
            where = "train/good (its validation share, by the hash rule)" \
                if name != "test" else "test/"
            raise DataError(f"{root} gives the {name} split no image: add images to {where}")
    keys = [key for key in order if key in kept]
    shape, reader = check_same([kept[key] for key in keys],
                               [paths[name][i] for name, i in keys], image_size, channels)
    splits = {name: Split(FileImages([paths[name][i] for i in chosen[name]], shape, reader),
                          np.array([labels[name][i] for i in chosen[name]], np.int64))
              for name in paths}
    defects = len(classes) - 1
    described = (f"the MVTec AD layout in {root} (normal: {NORMAL}; "
                 f"{plural(defects, 'defect type')}: {', '.join(classes[1:]) or 'none'})")
    return Splits(**splits, source=described, name="folder", class_names=classes,
                  normal_classes=[0], masks=[masks[i] for i in chosen["test"]])


def read_masks(masks: list[str | None], shape) -> np.ndarray:
    """bool (N, H, W): each mask prepared as its image is (preparation.prepare_file: the
    same crop and resize, to grey) and binarised at half the white level; False everywhere
    for None (a good image)."""
    import tensorflow as tf

    from ..preparation import prepare_file

    height, width = shape[:2]
    result = np.zeros((len(masks), height, width), bool)
    given = [i for i, path in enumerate(masks) if path]
    if given:
        files = tf.data.Dataset.from_tensor_slices(tf.constant([masks[i] for i in given]))
        prepared = files.map(lambda path: prepare_file(path, (height, width, 1)),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
        pixels = np.concatenate([batch.numpy() for batch in prepared])
        result[given] = pixels[..., 0] > 127
    return result
