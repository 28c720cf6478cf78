"""Training settings that fit a folder of images, for the settings the user did not give.

The post's settings (batch 256, 50 epochs, filters 16,8,8, BCE, the rate x0.96 every
1,000 steps) fit MNIST: 55,000 digits of 28x28 grey make 214 updates an epoch, 10,700
in all. A user's folder is often a few hundred or thousand colour photographs: at batch
256 that is a handful of updates an epoch, a model that has barely started, and a code
sized for digits. So for a folder of images the training settings the command line did
not give are chosen from the images (their number, size and channels): the batch, the
epochs (from a number of updates), the rate's schedule, the loss and the filters. The
choice and why are printed in the run's first lines and recorded in run.json; a flag
overrides each. The figures behind the numbers are in benchmarks/QUALITY.md (photos).
"""
from __future__ import annotations

import math

# The updates a folder's run is given (4 to 12 minutes on 32x32 colour patches on two CPU
# cores, benchmarks/QUALITY.md), and below which a run is told it trains too little
# (100 updates left photographs a coloured mush, 1,100 blurred blocks).
UPDATES = 4000
MIN_UPDATES = 1000
# Every epoch validates and saves a checkpoint: a folder of a few dozen images would make
# thousands of one-update epochs, mostly spent on those. At most this many.
MAX_EPOCHS = 500
# A folder of at least this many images per batch of 256 trains at the post's batch: an
# epoch is then dozens of updates, as on MNIST. Below it, batches of SMALL_BATCH.
POST_BATCH = 256
SMALL_BATCH = 32
IMAGES_FOR_POST_BATCH = POST_BATCH * 50
# Adam's rate halves HALVINGS times over the run (every UPDATES / HALVINGS steps), so
# that it ends small: Adam at a constant rate keeps jumping about the minimum, and the
# post's x0.96 every 1,000 steps barely lowers it in 4,000.
HALVINGS = 8
# Photographs (colour, or at least 32 pixels a side): wider stride-2 blocks, halving
# until the map is at most MAX_MAP pixels a side, then a flat code of PHOTO_CODE values,
# with the linear path started at PCA (--linear_path pca): without it the convolutions
# alone stayed 2 to 4 dB below PCA at the same code size after 4,000 to 8,000 updates.
# With it the model stays at PCA's level but not above: the start is a saddle that the
# convolutions do not leave in this budget (benchmarks/QUALITY.md, photos-32's reading).
PHOTO_FILTERS = (32, 64)
MAX_MAP = 8
PHOTO_CODE = 64


def photo_filters(height: int, width: int) -> list[int]:
    """PHOTO_FILTERS, then 64 per further halving, until the map is at most MAX_MAP."""
    filters, size = [], max(height, width)
    while size > MAX_MAP or len(filters) < len(PHOTO_FILTERS):
        filters.append(PHOTO_FILTERS[len(filters)] if len(filters) < len(PHOTO_FILTERS)
                       else PHOTO_FILTERS[-1])
        size = -(-size // 2)
    return filters


def choose(image_shape, num_train: int, given: dict) -> tuple[dict, list[str]]:
    """The settings a folder's run takes where the command line gave none (`given`: the
    settings it gave, {name: value}), and one reason per group of them. image_shape:
    [H, W, C]."""
    height, width, channels = image_shape
    chosen, reasons = {}, []
    batch = given.get("batch_size") or (
        POST_BATCH if num_train >= IMAGES_FOR_POST_BATCH else SMALL_BATCH)
    if "batch_size" not in given:
        batch = min(batch, num_train)
        chosen["batch_size"] = batch
        reasons.append(f"batch {batch}: {num_train:,} training images" + (
            "" if batch == POST_BATCH else f" are fewer than {IMAGES_FOR_POST_BATCH:,}, so "
                                           "smaller batches make more updates"))
    steps_per_epoch = max(1, num_train // batch)
    if "epochs" not in given:
        chosen["epochs"] = min(math.ceil(UPDATES / steps_per_epoch), MAX_EPOCHS)
        reasons.append(f"{chosen['epochs']:,} epochs of {steps_per_epoch:,} updates: " + (
            f"about {UPDATES:,} updates" if chosen["epochs"] < MAX_EPOCHS else
            f"at most {MAX_EPOCHS} epochs, {steps_per_epoch * MAX_EPOCHS:,} updates"))
    # The schedule fits the run's length where that is chosen too (a run whose epochs
    # are given keeps the post's schedule, as on any other data).
    if "epochs" in chosen and not {"lr_decay_steps", "lr_decay_rate"} & set(given):
        total = steps_per_epoch * chosen["epochs"]
        chosen.update(lr_decay_steps=max(1, total // HALVINGS), lr_decay_rate=0.5)
        reasons.append(f"the rate halves every {chosen['lr_decay_steps']:,} updates "
                       f"({HALVINGS} times over the run)")
    photo = channels == 3 or min(height, width) >= 32
    if photo and "loss" not in given:
        chosen["loss"] = "mse"
        reasons.append("MSE loss: what PSNR measures, for photographs")
    if photo and not {"num_filters", "downsample", "code_size"} & set(given):
        chosen.update(num_filters=photo_filters(height, width), downsample="strided",
                      code_size=PHOTO_CODE)
        reasons.append(f"filters {','.join(map(str, chosen['num_filters']))} with stride-2 "
                       f"convs and a flat code of {PHOTO_CODE} values: {height}x{width}x"
                       f"{channels} images have more to keep than 28x28 digits")
    code_size = chosen.get("code_size", given.get("code_size"))
    if (photo and code_size and "linear_path" not in given
            and given.get("model", "convolutional") == "convolutional"):
        chosen["linear_path"] = "pca"
        reasons.append(f"a linear path started at PCA with {code_size} components: the "
                       "model starts at PCA's reconstruction, which the convolutions alone "
                       "stay below")
    return chosen, reasons


def describe(chosen: dict, reasons: list[str], image_shape, num_train: int) -> str:
    """The run's line about the settings chosen for its images."""
    flags = " ".join(f"--{name} {','.join(map(str, value)) if isinstance(value, list) else value}"
                     for name, value in chosen.items())
    return (f"Settings chosen for {num_train:,} training images of "
            f"{'x'.join(map(str, image_shape))} (a flag overrides each): {flags}; "
            + "; ".join(reasons))


def too_few_updates(batch_size: int, epochs: int, num_train: int) -> str | None:
    """One line when a run would make fewer than MIN_UPDATES updates, and what to change;
    None otherwise."""
    steps = num_train // batch_size
    updates = steps * epochs
    if updates >= MIN_UPDATES:
        return None
    needed = math.ceil(MIN_UPDATES / max(1, steps))
    return (f"Warning: {epochs:,} epochs of {steps:,} updates (batch {batch_size} of "
            f"{num_train:,} images) make {updates:,} updates, too few to learn the images: "
            f"give --epochs {needed:,} or more, or a smaller --batch_size (or leave both out "
            f"to have them chosen)")
