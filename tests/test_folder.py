"""A folder of image files as a data source: layouts, the split rule, headers checked
before training, bad input, and the streamed pipeline giving the batches an array gives.

Real images: a subset of Debian's Fashion-MNIST written out as PNG class folders, and
the two JPEG photographs scikit-learn ships, cut into 36x44 patches."""
import gzip
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import idx_bytes, run_python, run_train
from tf_autoencoder.data import folder, pipeline, sources
from tf_autoencoder.errors import ConfigError, DataError

FASHION = "/usr/share/datasets/fashion-mnist"
N_TRAIN, N_TEST = 1200, 200  # validation: the first 100 of train, as the IDX source splits
CLASSES = ["0_tshirt", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt",
           "7_sneaker", "8_bag", "9_boot"]  # sorted as the labels are


def _fashion(name, offset, count):
    with gzip.open(os.path.join(FASHION, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)[:count]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(root, IDX folder): N_TRAIN + N_TEST Fashion-MNIST images as PNG files in
    root/train|validation|test/<class>/, and the same images in the folder's order as IDX
    files (train = validation + train), so that both sources hold the same splits."""
    if not os.path.isdir(FASHION):
        pytest.skip("dataset-fashion-mnist is not installed")
    base = tmp_path_factory.mktemp("fashion")
    images = _fashion("train-images-idx3-ubyte.gz", 16, N_TRAIN * 784).reshape(-1, 28, 28)
    labels = _fashion("train-labels-idx1-ubyte.gz", 8, N_TRAIN)
    test_images = _fashion("t10k-images-idx3-ubyte.gz", 16, N_TEST * 784).reshape(-1, 28, 28)
    test_labels = _fashion("t10k-labels-idx1-ubyte.gz", 8, N_TEST)
    n_val = N_TRAIN // 12
    parts = {"validation": (images[:n_val], labels[:n_val]),
             "train": (images[n_val:], labels[n_val:]), "test": (test_images, test_labels)}
    ordered = {}
    for split, (xs, ys) in parts.items():
        for i, (x, y) in enumerate(zip(xs, ys)):
            path = base / "png" / split / CLASSES[y] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(path)
        order = np.argsort(ys, kind="stable")  # the folder lists class by class, by name
        ordered[split] = (xs[order], ys[order])
    idx = base / "idx"
    idx.mkdir()
    arrays = {"train-images-idx3-ubyte": np.concatenate([ordered["validation"][0],
                                                         ordered["train"][0]]),
              "train-labels-idx1-ubyte": np.concatenate([ordered["validation"][1],
                                                         ordered["train"][1]]),
              "t10k-images-idx3-ubyte": ordered["test"][0],
              "t10k-labels-idx1-ubyte": ordered["test"][1]}
    for name, array in arrays.items():
        (idx / name).write_bytes(idx_bytes(array))
    return str(base / "png"), str(idx)


def test_split_folders_hold_the_same_images_as_the_idx_files(fashion):
    """Catches: labels not from the sorted class folders, a split folder ignored (hashed
    instead), or pixels changed by decoding."""
    png, idx = fashion
    files, arrays = sources.load_data(data_dir=png), sources.load_data(data_dir=idx)
    assert files.name == "folder" and arrays.name == "idx"
    assert files.class_names == CLASSES and "10 classes: 0_tshirt" in files.source
    for name in ("train", "validation", "test"):
        split, expected = getattr(files, name), getattr(arrays, name)
        assert len(split) == len(expected)
        np.testing.assert_array_equal(split.labels, expected.labels)
        np.testing.assert_array_equal(split.images[:], expected.images)
    assert files.image_shape == [28, 28, 1]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_files_give_the_batches_an_array_gives(fashion, data_format):
    """The streamed pipeline shuffles, noises and batches as the in-memory one: catches a
    file order that differs from the index order, or noise drawn per image."""
    png, _ = fashion
    split = sources.load_data(data_dir=png).validation
    arrays = split.images[:]
    kwargs = dict(batch_size=16, seed=3, noise_factor=0.5, data_format=data_format)
    for a, b in zip(pipeline.make_training_epochs(split.images, epochs=range(2), **kwargs),
                    pipeline.make_training_epochs(arrays, epochs=range(2), **kwargs)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    evaluation = [pipeline.make_dataset(images, batch_size=32, training=False, replicas=5,
                                        data_format=data_format)
                  for images in (split.images, arrays)]
    sizes = [[int(x.shape[0]) for x, _ in batches] for batches in evaluation]
    assert sizes[0] == sizes[1] == pipeline.evaluation_batches(len(arrays), 32, 5)


def test_training_from_png_files_gives_the_test_loss_of_the_idx_files(fashion, tmp_path):
    """The same images, order and seed: the same test loss, to the last bit. The files
    stream (--cache none), decoded as training goes."""
    png, idx = fashion
    losses = {}
    for name, data, extra in (("png", png, ["--cache", "none"]), ("idx", idx, [])):
        model_dir = tmp_path / name
        result = run_train("--data_dir", data, "--epochs", "1", "--batch_size", "100",
                           "--model_dir", str(model_dir), "--seed", "5", "--deterministic",
                           "--embedding_images", "20", *extra)
        assert result.returncode == 0, result.stderr
        losses[name] = json.loads((model_dir / "test_metrics.json").read_text())
        streamed = "Images: streamed, decoded anew every epoch (--cache none)"
        assert (streamed in result.stdout) == (name == "png"), result.stdout
        assert json.loads((model_dir / "run.json").read_text())["cache"] == (
            "none" if name == "png" else None)
    assert losses["png"] == losses["idx"]
    metadata = (tmp_path / "png" / "projector" / "metadata.tsv").read_text().splitlines()
    assert metadata[1].split("\t")[0] in CLASSES  # class names, not numbers


# --- layouts and the split rule -----------------------------------------------------------

def _png(path, height=8, width=8, mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), value if mode == "L" else (value,) * len(mode)).save(path)


def test_flat_folder_has_no_labels_and_a_stable_hash_split(tmp_path):
    """Catches a split by position (adding files would move old ones) or labels made up
    for a flat folder."""
    for i in range(60):
        _png(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    lines = []
    before = sources.load_data(data_dir=str(tmp_path), log=lines.append)
    assert lines == [f"Skipped 1 file in {tmp_path}: not images (by their extension: "
                     ".png, .jpg, .jpeg, .bmp, .gif) or hidden (a name that starts with a dot)"]
    assert not before.labelled and before.class_names is None
    assert sum(map(len, (before.train, before.validation, before.test))) == 60
    assert len(before.test) and len(before.validation)
    for i in range(60, 200):
        _png(tmp_path / f"{i:03d}.png")
    after = sources.load_data(data_dir=str(tmp_path), log=lines.append)
    for name in ("train", "validation", "test"):
        old = set(getattr(before, name).images.paths)
        assert old <= set(getattr(after, name).images.paths)


def test_class_folders_without_split_folders_are_split_by_hash(tmp_path):
    for label in ("cat", "dog"):
        for i in range(40):
            _png(tmp_path / label / f"{i}.png")
    splits = sources.load_data(data_dir=str(tmp_path))
    assert splits.class_names == ["cat", "dog"] and splits.labelled
    for split in (splits.train, splits.validation, splits.test):
        for path, label in zip(split.images.paths, split.labels):
            assert os.path.basename(os.path.dirname(path)) == ["cat", "dog"][label]
            assert folder.split_of(os.path.relpath(path, tmp_path)) == split_name(splits, split)


def split_name(splits, split):
    return next(name for name in ("train", "validation", "test") if getattr(splits, name) is split)


def test_sizes_or_colours_that_differ_name_two_files(tmp_path):
    for i in range(30):
        _png(tmp_path / f"{i:02d}.png")
    _png(tmp_path / "wide.png", width=10)
    with pytest.raises(ConfigError, match=r"images differ in size: .*\d\d.png is 8x8, .*wide.png "
                                        r"is 8x10 \(HxW\): give --image_size HxW"):
        sources.load_data(data_dir=str(tmp_path))
    os.unlink(tmp_path / "wide.png")
    _png(tmp_path / "rgb.png", mode="RGB")
    with pytest.raises(ConfigError, match=r"differ in colour: .*\d\d.png has 1 channel\(s\), "
                                        r".*rgb.png has 3: give --channels 1 or 3"):
        sources.load_data(data_dir=str(tmp_path))
    splits = sources.load_data(data_dir=str(tmp_path), image_size=[6, 4], channels=3)
    assert splits.image_shape == [6, 4, 3]
    assert splits.train.images[:2].shape == (2, 6, 4, 3)


def test_image_size_keeps_the_aspect_ratio_by_cropping_the_edges(tmp_path):
    """A 20x40 image whose outer quarters are black: resized to 10x10 it is the white
    centre alone (squashing it would keep black edges)."""
    image = np.full((20, 40), 255, np.uint8)
    image[:, :10] = image[:, 30:] = 0
    for name in ("a", "b", "c", "d", "e", "f", "g", "h"):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    images = folder.FileImages([str(tmp_path / "a.png")], (10, 10, 3))[:]
    assert images.shape == (1, 10, 10, 3) and images.min() == 255


# --- bad input: one line each, before anything is written -----------------------------

def test_empty_folder_and_folder_without_images(tmp_path):
    with pytest.raises(DataError, match="is empty: give a folder of images"):
        sources.load_data(data_dir=str(tmp_path))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"holds no image files \(1 other file;"):
        sources.load_data(data_dir=str(tmp_path))


def _many(tmp_path, n=30):
    for i in range(n):
        _png(tmp_path / f"{i:02d}.png")


def test_a_bad_header_is_found_at_listing_or_skipped(tmp_path):
    _many(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError,
                       match=r"broken.png: damaged image header .*--skip_bad_images skips"):
        sources.load_data(data_dir=str(tmp_path))
    lines = []
    splits = sources.load_data(data_dir=str(tmp_path), skip_bad_images=True, log=lines.append)
    assert sum(map(len, (splits.train, splits.validation, splits.test))) == 30
    assert any("Skipped 1 image file whose header" in line and "broken.png" in line
               for line in lines)


def test_a_header_claiming_an_enormous_size_is_refused_before_decoding(tmp_path):
    """A 50,000 x 50,000 PNG header (a few bytes of pixels): decoding it would take 7.5 GB."""
    from test_hostile import png_header_only

    _many(tmp_path)
    (tmp_path / "huge.png").write_bytes(png_header_only(50_000, 50_000))
    with pytest.raises(DataError, match=r"huge.png: 50000 wide x 50000 high is "
                                        r"2,500,000,000 pixels, above the limit"):
        sources.load_data(data_dir=str(tmp_path))


def test_a_symlink_loop_is_one_line(tmp_path):
    _many(tmp_path / "a")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    with pytest.raises(DataError, match=r"loop.* leads back to .*a symlink loop"):
        sources.load_data(data_dir=str(tmp_path))
    os.unlink(tmp_path / "a" / "loop")
    (tmp_path / "a" / "self.png").symlink_to(tmp_path / "a" / "self.png")
    with pytest.raises(DataError, match=r"self.png: .*symbolic links"):
        sources.load_data(data_dir=str(tmp_path))


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    _many(tmp_path)
    _png(tmp_path / "secret.png")
    os.chmod(tmp_path / "secret.png", 0)
    if os.geteuid() == 0:  # root ignores the mode: refuse the read as the kernel would
        from PIL import Image

        real_open = Image.open

        def refusing_open(path, *args, **kwargs):
            if str(path).endswith("secret.png"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refusing_open)
    with pytest.raises(DataError, match=r"cannot read .*secret.png: Permission denied"):
        sources.load_data(data_dir=str(tmp_path))


def test_bad_pixels_mid_epoch_name_the_file_or_are_skipped(tmp_path):
    """A PNG whose header reads but whose pixels are cut short: found while training,
    the run ends with one line naming the file."""
    rng = np.random.default_rng(0)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(data_dir / f"{i:02d}.png")
    bad = data_dir / "00.png"
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    args = ("--data_dir", str(data_dir), "--epochs", "1", "--batch_size", "4",
            "--num_filters", "4", "--embedding_images", "0")
    # Met while training, or while decoding into memory (the folder fits: the default).
    for extra in (["--cache", "none"], []):
        failed = run_train(*args, *extra, "--model_dir", str(tmp_path / "failed"))
        assert failed.returncode == 1
        # Met in the first epoch (or while caching): no checkpoint to speak of.
        assert failed.stderr.strip().splitlines()[-1].endswith(
            f"{bad} cannot be decoded (its header reads, its pixels do not, or it changed "
            "after the folder was listed): remove or replace the file, or pass "
            "--skip_bad_images")
    # --skip_bad_images: see test_colour_photographs_train_in_both_layouts.


def test_an_image_size_too_small_for_the_blocks_is_refused_before_writing(tmp_path):
    _many(tmp_path / "data")
    result = run_train("--data_dir", str(tmp_path / "data"), "--image_size", "2x2",
                       "--batch_size", "4",
                       "--model_dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "2x2 images are too small for 3 pooling blocks" in result.stderr
    assert not (tmp_path / "run").exists()


# --- colour photographs at a size that is not a power of two ------------------------------

@pytest.fixture(scope="module")
def photo_patches(tmp_path_factory):
    """36x44 patches of the two JPEG photographs scikit-learn ships, as JPEG files in
    class folders (china/, flower/)."""
    from sklearn.datasets import load_sample_images

    base = tmp_path_factory.mktemp("photos")
    photos = load_sample_images()
    for name, photo in zip(("china", "flower"), photos.images):
        (base / name).mkdir()
        for top in range(0, photo.shape[0] - 36 + 1, 36):
            for left in range(0, photo.shape[1] - 44 + 1, 44):
                Image.fromarray(photo[top:top + 36, left:left + 44]).save(
                    base / name / f"{top:03d}_{left:03d}.jpg", quality=90)
    # A JPEG whose header reads but whose pixels are cut short (a few bytes into its scan),
    # for --skip_bad_images.
    data = (base / "china" / "000_000.jpg").read_bytes()
    (base / "china" / "truncated.jpg").write_bytes(data[:data.index(b"\xff\xda") + 40])
    return str(base)


@pytest.mark.parametrize("data_format,labelled", [("NHWC", True), ("NCHW", False)])
def test_colour_photographs_train_in_both_layouts(photo_patches, tmp_path, data_format,
                                                  labelled):
    """Class folders in NHWC; in NCHW one flat folder (china/), without labels: evaluate
    then says so instead of fitting probes to one made-up class."""
    model_dir = tmp_path / "run"
    data_dir = photo_patches if labelled else os.path.join(photo_patches, "china")
    result = run_train("--data_dir", data_dir, "--epochs", "1", "--batch_size", "32",
                       "--data_format", data_format, "--model_dir", str(model_dir),
                       "--embedding_images", "16", "--skip_bad_images")
    assert result.returncode == 0, result.stderr
    assert "Skipped 1 image that cannot be decoded (--skip_bad_images), e.g. " \
           f"{os.path.join(photo_patches, 'china', 'truncated.jpg')}" in result.stdout
    assert "of 36x44x3" in result.stdout
    assert "Images: decoded once and held in memory (" in result.stdout
    facts = json.loads((model_dir / "run.json").read_text())
    assert facts["cache"] == "memory"  # what the run did; config.json keeps what was asked
    assert json.loads((model_dir / "config.json").read_text())["cache"] is None
    assert facts["image_shape"] == [36, 44, 3]
    assert facts["class_names"] == (["china", "flower"] if labelled else None)
    metrics = json.loads((model_dir / "test_metrics.json").read_text())
    assert np.isfinite(metrics["metrics"]["loss"])
    if not labelled:  # (with labels, evaluate runs as on any other source)
        evaluated = run_python("-m", "tf_autoencoder", "evaluate", str(model_dir))
        assert evaluated.returncode == 0, evaluated.stderr
        assert "5-NN accuracy" not in evaluated.stdout
        assert re.search(r"linear probe and k-NN accuracy +no labels", evaluated.stdout)


def test_cache_memory_decodes_the_files_once_into_arrays(fashion):
    """--cache memory: the same images, now in memory. Catches a cache that reorders."""
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config

    png, _ = fashion
    cached = open_data(Config(data_dir=png, cache="memory").validate(), None, lambda: None)
    streamed = sources.load_data(data_dir=png)
    for name in ("train", "validation", "test"):
        images = getattr(cached, name).images
        assert isinstance(images, np.ndarray)
        np.testing.assert_array_equal(images, getattr(streamed, name).images[:])


def test_folder_settings_on_another_source_are_refused(idx_dir):
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config, ConfigError

    with pytest.raises(ConfigError, match="--image_size applies to a folder of images or a "
                                          "TFDS dataset, not "
                                          "IDX files in"):
        open_data(Config(data_dir=idx_dir, image_size=[8, 8]).validate(), None, lambda: None)


def test_split_folders_of_different_layouts_are_one_line(tmp_path):
    """train/ with classes and test/ without would label one split and not the other."""
    for i in range(20):
        _png(tmp_path / "train" / "cat" / f"{i}.png")
        _png(tmp_path / "test" / f"{i}.png")
    with pytest.raises(DataError, match=r"test and .*train differ in layout"):
        sources.load_data(data_dir=str(tmp_path))


def test_cache_folder_gives_the_batches_the_files_give_and_is_reused(fashion, tmp_path):
    """--cache DIR: one file per split, the same pixels and batches as the files (NCHW:
    catches a batch left in NHWC), reused while the images are unchanged, made anew
    for a changed image; --normal_classes picks the same images from it."""
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config
    from tf_autoencoder.data.cache import CachedImages

    png, _ = fashion
    cache = tmp_path / "cache"
    open_cached = lambda **kw: open_data(Config(data_dir=png, cache=str(cache),  # noqa: E731
                                                **kw).validate(), None, lambda: None)
    cached, streamed = open_cached(), sources.load_data(data_dir=png)
    made = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    assert sorted(name.split("-")[0] for name in made) == ["test", "train", "validation"]
    for name in ("train", "validation", "test"):
        images = getattr(cached, name).images
        assert isinstance(images, CachedImages)
        np.testing.assert_array_equal(images[:], getattr(streamed, name).images[:])
        np.testing.assert_array_equal(images[[5, 1]], getattr(streamed, name).images[[5, 1]])
    kwargs = dict(batch_size=16, seed=3, noise_factor=0.5, data_format="channels_first")
    for a, b in zip(pipeline.make_training_epochs(cached.validation.images, epochs=range(2),
                                                  **kwargs),
                    pipeline.make_training_epochs(streamed.validation.images, epochs=range(2),
                                                  **kwargs)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    evaluation = [[x.numpy() for x, _ in pipeline.make_dataset(
        images, batch_size=32, training=False, replicas=3, data_format="channels_first")]
        for images in (cached.test.images, streamed.test.images)]
    assert len(evaluation[0]) == len(evaluation[1])
    for a, b in zip(*evaluation):
        np.testing.assert_array_equal(a, b)

    normal = open_cached(normal_classes=[3])
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == made  # reused
    kept = streamed.train.labels == 3
    np.testing.assert_array_equal(normal.train.images[:], streamed.train.images[:][kept])
    assert set(normal.train.labels) == {3} and len(normal.test) == len(streamed.test)

    test_file = streamed.test.images.paths[0]
    original = open(test_file, "rb").read()
    try:
        Image.fromarray(np.full((28, 28), 7, np.uint8)).save(test_file)
        again = open_cached()
        np.testing.assert_array_equal(again.test.images[[0]][0, ..., 0], 7)
        names = {p.name for p in cache.glob("*.npy")}
        assert len(names) == 4 and set(made) < names  # a new test file; train's reused
    finally:
        open(test_file, "wb").write(original)


def test_cache_folder_is_never_half_written(tmp_path):
    """An image whose pixels do not decode stops the caching with one line naming it, and
    leaves no cache file of its split (nor a temporary one); a file given as the folder
    is refused."""
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config, ConfigError

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(tmp_path / "data" /
                                                                      f"{i:02d}.png")
    bad = tmp_path / "data" / "03.png"
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])  # header reads, pixels not
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"03.png cannot be decoded"):
        open_data(Config(data_dir=str(tmp_path / "data"), cache=str(cache)).validate(), None,
                  lambda: None)
    splits = sources.load_data(data_dir=str(tmp_path / "data"))
    holder = next(name for name in ("train", "validation", "test")
                  if str(bad) in getattr(splits, name).images.paths)
    names = [p.name for p in cache.iterdir()]  # the splits cached before it, whole
    assert names and not [name for name in names if name.startswith((".", holder))]
    with pytest.raises(ConfigError, match=r"--cache .*00.png is a file: give a folder"):
        open_data(Config(data_dir=str(tmp_path / "data"),
                         cache=str(tmp_path / "data" / "00.png")).validate(), None, lambda: None)


def test_plain_files_skip_the_conversions_and_decode_alike(photo_patches, tmp_path):
    """8-bit grey or RGB PNG/JPEG files, upright and opaque, are read without the steps
    they do not need (already of the model's size: without resizing either): the same
    pixels each way (RGB JPEG here, grey PNG in
    test_split_folders_hold_the_same_images_as_the_idx_files); any file that needs a
    conversion (alpha here) makes the folder take the whole preparation."""
    splits = sources.load_data(data_dir=photo_patches, skip_bad_images=True, log=lambda _: None)
    plain = splits.train.images
    assert plain.reader == "plain"
    general = folder.FileImages(plain.paths[:40], plain.image_shape)
    np.testing.assert_array_equal(plain.subset(np.arange(40))[:], general[:])
    _png(tmp_path / "a" / "rgba.png", 36, 44, mode="RGBA")
    for name in os.listdir(os.path.join(photo_patches, "flower"))[:30]:
        os.symlink(os.path.join(photo_patches, "flower", name), tmp_path / "a" / name)
    assert sources.load_data(data_dir=str(tmp_path / "a")).train.images.reader == "any"
    for size, channels in [([18, 22], None), ([40, 30], 1)]:
        resized = sources.load_data(data_dir=photo_patches, skip_bad_images=True,
                                    image_size=size, channels=channels, log=lambda _: None)
        simple = resized.train.images
        assert simple.reader == "simple"
        general = folder.FileImages(simple.paths[:40], simple.image_shape)
        np.testing.assert_array_equal(simple.subset(np.arange(40))[:], general[:])


def test_cache_folder_checks_the_free_disk_for_what_it_still_has_to_write(tmp_path, monkeypatch):
    """Refused before writing when the disk lacks the space; a folder already cached needs
    none (catches a check that counts the files it would only read)."""
    import shutil
    from collections import namedtuple

    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config, ConfigError

    for i in range(30):
        _png(tmp_path / "data" / f"{i:02d}.png", value=i)
    config = Config(data_dir=str(tmp_path / "data"), cache=str(tmp_path / "cache")).validate()
    usage = shutil.disk_usage(tmp_path)
    full = namedtuple("usage", "total used free")(usage.total, usage.total, 0)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: full)
        with pytest.raises(ConfigError, match=r"need 0.0 GiB, and its disk has 0.0 GiB free"):
            open_data(config, None, lambda: None)
    assert list((tmp_path / "cache").iterdir()) == []
    open_data(config, None, lambda: None)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    cached = open_data(config, None, lambda: None)
    assert len(cached.train) + len(cached.validation) + len(cached.test) == 30


# --- in memory or streamed ----------------------------------------------------------------

def open_said(config, capsys):
    """open_data on `config` and the lines it printed."""
    from tf_autoencoder.commands import open_data

    splits = open_data(config.validate(), None, lambda: None)
    return splits, capsys.readouterr().out.splitlines()


def test_a_folder_that_fits_is_held_in_memory_unasked_and_a_larger_one_streams(
        tmp_path, monkeypatch, capsys):
    """The rule's edge: with 4x the decoded size available the images are decoded once
    into arrays; a byte less, and they stream from the files. Each says so, and run.json
    records it. Catches a rule that ignores the size, one that streams what fits, and a
    run that holds the images without saying so."""
    from tf_autoencoder import memory
    from tf_autoencoder.commands import run_facts
    from tf_autoencoder.config import Config

    _many(tmp_path / "data")  # 30 grey 8x8 images: 1,920 bytes decoded
    config = Config(data_dir=str(tmp_path / "data"), seed=0)
    decoded = 30 * 8 * 8
    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * decoded)
    held, said = open_said(config, capsys)
    assert said == ["Images: decoded once and held in memory (1.9 KiB decoded, at most 25% "
                    "of the 7.5 KiB of memory available; --cache none streams them instead)"]
    assert all(isinstance(getattr(held, name).images, np.ndarray)
               for name in ("train", "validation", "test"))
    assert run_facts(config.validate(), None, held).cache == "memory"
    streamed = sources.load_data(data_dir=str(tmp_path / "data"))
    np.testing.assert_array_equal(held.train.images, streamed.train.images[:])

    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * decoded - 1)
    files, said = open_said(config, capsys)
    assert said == ["Images: streamed, decoded anew every epoch (1.9 KiB decoded, more than "
                    "25% of the 7.5 KiB of memory available; --cache DIR decodes them once "
                    "into files there)"]
    assert isinstance(files.train.images, folder.FileImages)
    assert run_facts(config.validate(), None, files).cache == "none"


def test_cache_none_streams_what_would_fit(tmp_path, capsys):
    from tf_autoencoder.config import Config

    _many(tmp_path / "data")
    files, said = open_said(Config(data_dir=str(tmp_path / "data"), cache="none"), capsys)
    assert said == ["Images: streamed, decoded anew every epoch (--cache none)"]
    assert isinstance(files.train.images, folder.FileImages) and files.cache == "none"
