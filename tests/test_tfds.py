"""TensorFlow Datasets sources, streamed: small datasets prepared here by TFDS itself
(real TFDS files, no download), and a mocked CIFAR-10 trained through the command line."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from conftest import assert_shares_add_up, run_record
from tf_autoencoder.data import pipeline, sources, tfds_images
from tf_autoencoder.data.tfds_images import TfdsImages
from tf_autoencoder.errors import DataError


def numbered(n, offset=0, shape=(6, 5, 3), label=True):
    """Example i: an image every pixel of which is (offset + i) % 256, label i % 3."""
    for i in range(n):
        example = {"image": np.full(shape, (offset + i) % 256, np.uint8)}
        if label:
            example["label"] = i % 3
        yield i, example


class Tiny(tfds.core.GeneratorBasedBuilder):
    """A dataset whose splits are the generators _split_generators returns (abstract:
    TFDS registers only its subclasses, by their names: TinyNumbered is tiny_numbered)."""
    VERSION = tfds.core.Version("1.0.0")

    def _generate_examples(self, examples):
        yield from examples


class TinyNumbered(Tiny):
    """120 training and 24 test RGB images of 6x5, with three named classes."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 5, 3)),
            "label": tfds.features.ClassLabel(names=["ant", "bee", "cat"])}))

    def _split_generators(self, dl_manager):
        return {"train": numbered(120), "test": numbered(24, offset=200)}


class TinyUnlabelled(Tiny):

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, 1))}))

    def _split_generators(self, dl_manager):
        return {"train": numbered(24, shape=(4, 4, 1), label=False),
                "test": numbered(6, shape=(4, 4, 1), label=False)}


class TinyNoTest(Tiny):

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, 1))}))

    def _split_generators(self, dl_manager):
        return {"train": numbered(24, shape=(4, 4, 1), label=False)}


class TinyVariable(Tiny):
    """Images of any size, as many real datasets have (e.g. photographs)."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        def sizes(n):
            for i, example in numbered(n, shape=(1, 1, 3)):
                example["image"] = np.full((8 + i % 3, 6 + i % 2, 3), i, np.uint8)
                yield i, example
        return {"train": sizes(24), "test": sizes(6)}


class TinyText(Tiny):

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        def texts(n):
            for i in range(n):
                yield i, {"text": f"example {i}", "label": i % 2}
        return {"train": texts(4), "test": texts(2)}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """TFDS's data folder, with the tiny datasets prepared in it (tfds.builder finds them
    there, as it finds a downloaded dataset)."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    with pytest.MonkeyPatch.context() as patch:
        # TFDS reads TFDS_DATA_DIR once, when imported: its default folder is set here.
        patch.setattr(constants, "DATA_DIR", directory)
        for builder in (TinyNumbered, TinyUnlabelled, TinyNoTest, TinyVariable, TinyText):
            builder(data_dir=directory).download_and_prepare()
        yield directory


def pixels(images):
    """Each image's one value (every image here is a single value throughout)."""
    return images[:, 0, 0, 0].astype(int)


def test_tfds_splits_are_streamed_in_tfds_order_with_their_labels(tfds_dir):
    splits = sources.load_data("tiny_numbered")
    # The whole training split as TFDS gives it, read once into memory here to compare.
    whole = pixels(np.stack([example["image"] for example in tfds.as_numpy(
        tfds.builder("tiny_numbered").as_dataset(split="train", shuffle_files=False))]))
    assert sorted(whole) == list(range(120))  # TFDS stores them in its own order
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (110, 10, 24)
    assert splits.image_shape == [6, 5, 3] and splits.name == "tiny_numbered"
    assert splits.class_names == ["ant", "bee", "cat"]
    for split in (splits.train, splits.validation, splits.test):
        assert isinstance(split.images, TfdsImages)
    # Validation: the first 10 of the training split, train the rest, as the original.
    np.testing.assert_array_equal(pixels(splits.validation.images[:]), whole[:10])
    np.testing.assert_array_equal(pixels(splits.train.images[:]), whole[10:])
    assert sorted(pixels(splits.test.images[:])) == list(range(200, 224))
    for split, offset in ((splits.train, 0), (splits.validation, 0), (splits.test, 200)):
        np.testing.assert_array_equal(split.labels, (pixels(split.images[:]) - offset) % 3)
    # Indices in any order, and evaluation batches: in the split's order.
    np.testing.assert_array_equal(pixels(splits.train.images[[7, 2, 7]]), whole[10:][[7, 2, 7]])
    evaluated = np.concatenate([x.numpy() for x, _ in pipeline.make_dataset(
        splits.test.images, batch_size=5, training=False)])
    np.testing.assert_array_equal(evaluated, splits.test.images[:].astype(np.float32) / 255)


def test_normal_classes_keep_the_streamed_images_of_those_labels(tfds_dir):
    splits = sources.select_normal(sources.load_data("tiny_numbered"), [0, 2])
    for split in (splits.train, splits.validation):
        assert isinstance(split.images, TfdsImages) and set(split.labels) == {0, 2}
        # The images read are those of the labels kept (label = pixel % 3), none skipped.
        np.testing.assert_array_equal(pixels(split.images[:]) % 3, split.labels)
        # Its length known (Keras takes a validation set of unknown length to have run out).
        assert split.images.dataset().cardinality() == len(split.labels)
        batches = pipeline.make_dataset(split.images, batch_size=4, training=True, seed=1)
        seen = np.concatenate([x.numpy() for x, _ in batches])
        assert set(pixels(np.round(seen * 255))) <= set(pixels(split.images[:]))
    assert len(splits.train) + len(splits.validation) == 80  # of 120, labels i % 3
    assert set(splits.test.labels) == {0, 1, 2}


def test_the_training_shuffle_holds_a_bounded_number_of_images(tfds_dir, monkeypatch):
    """A split is shuffled through a buffer of at most SHUFFLE_BUFFER_BYTES of encoded
    images (here 4 images' worth), not by holding the whole split."""
    images = sources.load_data("tiny_numbered").train.images
    monkeypatch.setattr(tfds_images, "SHUFFLE_BUFFER_BYTES",
                        4.5 * images.source.example_bytes(images.image_shape))
    in_order = list(pixels(images[:]))
    shuffled = list(pixels(np.concatenate([batch.numpy() for batch in images.dataset(
        shuffle=True, seed=1).batch(50)])))
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    # The k-th image out is one of the first 4 + k read: the buffer held 4.
    assert all(value in in_order[:4 + k] for k, value in enumerate(shuffled))
    assert any(value not in in_order[:3 + k] for k, value in enumerate(shuffled))


def test_image_size_and_channels_convert_tfds_images_as_a_folders(tfds_dir):
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config

    splits = open_data(Config(dataset="tiny_numbered", image_size=[3, 4], channels=1).validate(),
                       None, lambda: None)
    assert splits.image_shape == [3, 4, 1]
    images = splits.test.images[:4]
    assert images.shape == (4, 3, 4, 1)
    # A grey of one value throughout stays that value, resized or not.
    np.testing.assert_array_equal(images, np.broadcast_to(images[:, :1, :1], images.shape))
    assert sorted(pixels(images)) == sorted(pixels(sources.load_data("tiny_numbered")
                                                   .test.images[:4]))


def test_a_tfds_dataset_without_labels_has_label_minus_one(tfds_dir):
    splits = sources.load_data("tiny_unlabelled")
    assert set(splits.train.labels) == {-1} and not splits.labelled
    assert splits.class_names is None and splits.image_shape == [4, 4, 1]


@pytest.mark.parametrize("name, message", [
    ("tiny_no_test", r"'tiny_no_test' has no 'test' split \(it has train\)"),
    ("tiny_variable", r"the images of 'tiny_variable' differ in size .*give --image_size"),
    ("tiny_text", r"'tiny_text' has no image feature \(it has text, label\)"),
])
def test_a_tfds_dataset_that_does_not_fit_is_one_line(tfds_dir, name, message):
    with pytest.raises(DataError, match=message):
        sources.load_data(name, fallback_to_sample=True)


def test_images_of_any_size_train_at_the_size_given(tfds_dir):
    splits = sources.load_data("tiny_variable", image_size=(5, 4))
    assert splits.image_shape == [5, 4, 3] and splits.train.images[:].shape[1:] == (5, 4, 3)


@pytest.fixture
def mock_cifar10(monkeypatch, tmp_path):
    """CIFAR-10 as TFDS's mock gives it, offline: its real features (32x32 RGB, 10
    classes), random images, 240 examples in each split."""
    monkeypatch.setattr(constants, "DATA_DIR", str(tmp_path / "tfds"))
    # The mock needs no download, which the check before loading would look for.
    monkeypatch.setattr(sources, "tfds_unavailable_reason", lambda name: None)
    with tfds.testing.mock_data(num_examples=240, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_cifar10_trains_in_memory_at_its_own_size_and_colour(mock_cifar10, tmp_path,
                                                            monkeypatch, capsys):
    """A TFDS dataset that fits is decoded once and held in memory, and says so; evaluate
    and embeddings then stream it (nothing asked to hold it)."""
    from tf_autoencoder.cli import main
    from tf_autoencoder.run import training

    trained_on = []
    real_train = training.train

    def train(settings, facts, splits, **kwargs):
        trained_on.append(splits)
        return real_train(settings, facts, splits, **kwargs)

    monkeypatch.setattr(training, "train", train)
    model_dir = str(tmp_path / "run")
    assert main(["train", "--dataset", "cifar10", "--epochs", "1", "--batch_size", "16",
                 "--normal_classes", "0,2", "--seed", "3", "--model_dir", model_dir]) == 0
    out = capsys.readouterr().out
    assert "Data: TensorFlow Datasets 'cifar10'" in out
    assert "Images: decoded once and held in memory (" in out
    [splits] = trained_on
    for split in (splits.train, splits.validation, splits.test):
        assert isinstance(split.images, np.ndarray)
        assert len(split.images) == len(split.labels)
    assert run_record(model_dir)["cache"] == "memory"
    assert set(splits.train.labels) == set(splits.validation.labels) == {0, 2}
    assert len(set(splits.test.labels)) > 2  # the test split keeps every class
    assert run_record(model_dir)["image_shape"] == [32, 32, 3]
    import keras

    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32, 32, 3)
    # What reads a few of the images by index: the anomaly report's extremes, the grid.
    assert main(["evaluate", model_dir]) == 0
    assert os.path.getsize(os.path.join(model_dir, "anomaly_extremes.png"))
    assert main(["embeddings", "--model_dir", model_dir, "--what", "reconstruction",
                 "--no_show"]) == 0
    assert os.path.getsize(os.path.join(model_dir, "reconstructions.png"))


def test_a_tfds_split_gives_the_same_batches_for_the_same_seed(mock_cifar10):
    images = sources.load_data("cifar10").train.images

    def first_batches(seed, epochs, count=3):
        batches = pipeline.make_training_epochs(images, batch_size=8, epochs=epochs, seed=seed)
        return [x.numpy() for x, _ in batches.take(count)]

    once, again = first_batches(5, range(0, 2)), first_batches(5, range(0, 2))
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, first_batches(6, range(0, 2)))
    # Epoch 1 follows from seed + 1 alone: a run resumed there gets the same batches.
    per_epoch = len(images) // 8
    both = [x.numpy() for x, _ in pipeline.make_training_epochs(
        images, batch_size=8, epochs=range(0, 2), seed=5)]
    assert len(both) == 2 * per_epoch
    np.testing.assert_array_equal(both[per_epoch:per_epoch + 3], first_batches(5, range(1, 2)))
    # Shuffled: not the split's own order, and every image of a batch is one of the split's.
    assert not np.array_equal(once[0], images[:8] / 255)


def test_cache_decodes_a_tfds_split_once_into_memory_or_a_file(tfds_dir, tmp_path):
    """--cache on a TFDS source: the same images, in the split's order (one file per
    split), then shuffled by index like an array."""
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config
    from tf_autoencoder.data.cache import CachedImages

    streamed = sources.load_data("tiny_numbered")
    for cache in ("memory", str(tmp_path / "cache")):
        cached = open_data(Config(dataset="tiny_numbered", cache=cache).validate(), None,
                           lambda: None)
        for name in ("train", "validation", "test"):
            images = getattr(cached, name).images
            assert isinstance(images, np.ndarray if cache == "memory" else CachedImages)
            np.testing.assert_array_equal(images[:], getattr(streamed, name).images[:])
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.npy"))
    assert names == ["test", "train", "validation"]
    batches = pipeline.make_training_epochs(cached.train.images, batch_size=10, epochs=range(1),
                                            seed=2)
    first = pixels(next(iter(batches))[0].numpy() * 255)
    assert sorted(first) != list(first)  # shuffled by index
    assert set(first) <= set(pixels(streamed.train.images[:]))


def test_workers_keep_their_shares_of_a_tfds_splits_batches(tfds_dir):
    """A TFDS split has no indices to share out: every worker reads the global batches
    and keeps its replicas' shares, which add up to one device's batches."""
    assert_shares_add_up(sources.load_data("tiny_numbered").train.images)
