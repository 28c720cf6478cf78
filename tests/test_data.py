import contextlib
import gzip
import http.server
import os
import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import idx_bytes, write_idx_dir
from tf_autoencoder.data import pipeline
from tf_autoencoder.data import sources, tfds_images
from tf_autoencoder.config import ConfigError
from tf_autoencoder.data.sources import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_gives_train_validation_test_splits(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, n_train=120, n_test=20, gz=gz)
    splits = sources.load_idx_dir(str(tmp_path))
    # 1/12 of training validates, as 5,000 of MNIST's 60,000; the first ones, as the original.
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (110, 10, 20)
    train_images = arrays["train-images-idx3-ubyte"]
    np.testing.assert_array_equal(splits.validation.images[..., 0], train_images[:10])
    np.testing.assert_array_equal(splits.train.images[..., 0], train_images[10:])
    np.testing.assert_array_equal(splits.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.images.dtype == np.uint8 and splits.image_shape == [28, 28, 1]
    assert splits.name == "idx"


def test_real_fashion_mnist_sizes_when_the_debian_package_is_there():
    path = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(path):
        pytest.skip("dataset-fashion-mnist is not installed")
    splits = sources.load_idx_dir(path)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (55_000, 5_000, 10_000)


def _write(path, content, gz=False):
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(content)


def test_read_idx_rejects_wrong_magic(tmp_path):
    path = str(tmp_path / "x")
    _write(path, b"\x00\x00\x0d\x03" + b"\x00" * 20)  # float IDX: not ours
    with pytest.raises(DataError, match="magic number"):
        sources.read_idx(path)


def test_read_idx_rejects_an_empty_file_of_impossible_shape(tmp_path):
    # Zero items, so the size matches, but numpy cannot make a 0 x 46341 x 46341 x 4294958031
    # array (hypothesis found this header).
    path = str(tmp_path / "x")
    _write(path, bytes.fromhex("00000804" "00000000" "0000b505" "0000b505" "ffffdbcf"))
    with pytest.raises(DataError, match="too large to hold"):
        sources.read_idx(path)


def test_read_idx_rejects_truncated_file(tmp_path):
    path = str(tmp_path / "x.gz")
    _write(path, idx_bytes(np.zeros((5, 4, 4), np.uint8))[:-7], gz=True)
    with pytest.raises(DataError, match="truncated"):
        sources.read_idx(path)


def test_idx_folder_rejects_image_and_label_counts_that_disagree(tmp_path):
    write_idx_dir(tmp_path, n_train=30)
    _write(str(tmp_path / "train-labels-idx1-ubyte"), idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(DataError, match="30 images but 29 labels"):
        sources.load_idx_dir(str(tmp_path))


def test_missing_folder_and_missing_file_say_what_is_needed(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sources.load_idx_dir(str(tmp_path / "nope"))
    write_idx_dir(tmp_path)
    os.unlink(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        sources.load_idx_dir(str(tmp_path))


def test_mnist_sample_is_5000_real_digits_split_4000_500_500():
    splits = sources.load_mnist_sample()
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4000, 500, 500)
    assert splits.train.images.shape[1:] == (28, 28, 1) and splits.train.images.dtype == np.uint8
    labels = np.concatenate([splits.train.labels, splits.validation.labels, splits.test.labels])
    assert np.bincount(labels).tolist() == [500] * 10
    # Shuffled before splitting, so every split holds every digit.
    assert set(splits.test.labels.tolist()) == set(range(10))
    # Real digits: mostly black background with bright strokes.
    assert 0.05 < (splits.train.images > 128).mean() < 0.3


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every request with `status`: 200 for a download host, 403 for a proxy
    that refuses to connect out."""
    status = 200

    def do_HEAD(self):
        self.send_response(self.status)
        self.end_headers()

    do_GET = do_CONNECT = do_HEAD

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(status):
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_download_probe_answers_fast_for_a_host_that_answers_and_a_closed_port(no_proxy_settings):
    with http_server(200) as url:
        assert sources.download_unreachable_reason(url, timeout=5) is None
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    assert "refused" in sources.download_unreachable_reason(f"http://127.0.0.1:{closed_port}/",
                                                        timeout=5).lower()


def test_download_probe_goes_through_the_proxy_as_the_download_would(no_proxy_settings):
    """Behind a proxy that refuses to connect out, the host is unreachable, though a TCP
    connection straight to it (the probe before) would open."""
    with http_server(200) as url, http_server(403) as proxy:
        no_proxy_settings.setenv("https_proxy", proxy)
        # HTTPS, as TFDS downloads: through the proxy's CONNECT, which it refuses.
        reason = sources.download_unreachable_reason(url.replace("http:", "https:"), timeout=5)
    assert reason is not None and "403" in reason


def test_a_tfds_dataset_that_cannot_be_set_up_says_why_not_unknown(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def builder(name):
        raise ImportError("this dataset needs the apache_beam package")

    monkeypatch.setattr(tfds, "builder", builder)
    reason = sources.tfds_unavailable_reason("mnist")
    assert "ImportError: this dataset needs the apache_beam package" in reason
    assert "unknown" not in reason


def test_a_download_that_fails_after_the_probe_falls_back_or_says_what_failed(monkeypatch):
    monkeypatch.setattr(sources, "tfds_unavailable_reason", lambda name: None)

    def load_tfds(name, image_size, channels):
        raise RuntimeError("Failed to get url https://example/mnist.gz. HTTP code: 403.")

    monkeypatch.setattr(tfds_images, "load_tfds", load_tfds)
    said = []
    splits = sources.load_data("mnist", fallback_to_sample=True, log=said.append)
    assert splits.name == sources.SAMPLE
    [line] = said
    assert "MNIST sample" in line and "HTTP code: 403" in line
    with pytest.raises(DataError, match="RuntimeError: Failed to get url .* HTTP code: 403"):
        sources.load_data("fashion_mnist", fallback_to_sample=False)


def test_unknown_tfds_name_is_a_usage_error():
    with pytest.raises(ConfigError, match="unknown dataset 'no_such_dataset_xyz'"):
        sources.tfds_unavailable_reason("no_such_dataset_xyz")


def test_tfds_source_splits_55000_5000_10000_like_the_original():
    """Validation is the first 5,000 of TFDS's 60,000 training examples, train the other
    55,000, test TFDS's 10,000: the labels say which (label = index), read without
    decoding a single image."""
    import tensorflow_datasets as tfds

    sizes = {"train": 60_000, "test": 10_000}
    read = []

    def as_dataset(self, split, decoders=None, **kwargs):
        # MNIST's two splits as TFDS reads them with the images left encoded (a decoded
        # image would need a real PNG: these are empty strings).
        assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
        read.append(split)
        n = sizes[split]
        return tf.data.Dataset.from_tensor_slices({"image": tf.fill([n], ""),
                                                   "label": tf.range(n, dtype=tf.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        splits = tfds_images.load_tfds("mnist")
    assert read == ["train", "test"]  # each split's labels read once
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (55_000, 5_000, 10_000)
    np.testing.assert_array_equal(splits.validation.labels, np.arange(5_000))
    np.testing.assert_array_equal(splits.train.labels, np.arange(5_000, 60_000))
    np.testing.assert_array_equal(splits.test.labels, np.arange(10_000))
    # The images stay unread, each split the stretch of TFDS's split its labels came from.
    assert isinstance(splits.train.images, tfds_images.TfdsImages)
    np.testing.assert_array_equal(splits.train.images.positions, np.arange(5_000, 60_000))
    assert splits.train.images.split == "train" and splits.test.images.split == "test"
    assert splits.image_shape == [28, 28, 1] and splits.class_names is None


def test_unavailable_default_falls_back_to_the_sample_and_says_so(monkeypatch):
    monkeypatch.setattr(sources, "tfds_unavailable_reason", lambda name: "no network")
    said = []
    splits = sources.load_data("mnist", fallback_to_sample=True, log=said.append)
    assert splits.name == sources.SAMPLE and len(said) == 1 and "MNIST sample" in said[0]
    with pytest.raises(DataError, match="no network"):
        sources.load_data("fashion_mnist", fallback_to_sample=False)


def test_devices_are_set_up_before_tfds_runs_tensorflow_and_not_for_other_sources(monkeypatch):
    """train.py sets up its tf.distribute devices in before_tensorflow: after the input
    checks when it can, but before TFDS runs TensorFlow ops, which fixes the devices."""
    calls = []
    monkeypatch.setattr(sources, "tfds_unavailable_reason", lambda name: None)
    monkeypatch.setattr(tfds_images, "load_tfds",
                        lambda *args: calls.append("load") or sources.load_mnist_sample())
    sources.load_data("mnist", before_tensorflow=lambda: calls.append("set up"))
    assert calls == ["set up", "load"]
    calls.clear()
    sources.load_data(sources.SAMPLE, before_tensorflow=lambda: calls.append("set up"))
    monkeypatch.setattr(sources, "tfds_unavailable_reason", lambda name: "no network")
    sources.load_data("mnist", fallback_to_sample=True, log=lambda line: None,
                   before_tensorflow=lambda: calls.append("set up"))
    assert calls == []


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_pipeline_scales_to_unit_range_and_targets_the_clean_image():
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 1), dtype=np.uint8)
    [(inputs, targets)] = _batches(pipeline.make_dataset(images, batch_size=10, training=False))
    np.testing.assert_allclose(targets, images / 255, atol=1e-6)
    np.testing.assert_array_equal(inputs, targets)


def test_training_pipeline_shuffles_and_drops_the_last_partial_batch():
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    ds = pipeline.make_dataset(images, batch_size=16, training=True, seed=1)
    epoch1, epoch2 = _batches(ds), _batches(ds)
    assert [x.shape[0] for x, _ in epoch1] == [16, 16, 16]
    order1 = np.concatenate([y.ravel() for _, y in epoch1])
    order2 = np.concatenate([y.ravel() for _, y in epoch2])
    assert len(set(order1.tolist())) == 48 and not np.array_equal(order1, order2)
    eval_batches = _batches(pipeline.make_dataset(images, batch_size=16, training=False))
    assert [x.shape[0] for x, _ in eval_batches] == [16, 16, 16, 2]


def test_noise_is_clipped_targets_stay_clean_and_noise_changes_every_epoch():
    images = np.full((64, 8, 8, 1), 128, np.uint8)
    ds = pipeline.make_dataset(images, batch_size=32, training=False, noise_factor=0.5, seed=3)
    epoch1, epoch2 = _batches(ds), _batches(ds)
    for inputs, targets in epoch1:
        assert inputs.min() >= 0 and inputs.max() <= 1
        assert (inputs == 0).any() and (inputs == 1).any()  # clipping happened
        np.testing.assert_allclose(targets, 128 / 255, atol=1e-6)
        assert 0.3 < np.std(inputs - targets) < 0.5
    assert not np.allclose(epoch1[0][0], epoch2[0][0])
    # The same seed gives the same noise: runs are reproducible.
    again = _batches(pipeline.make_dataset(images, batch_size=32, training=False,
                                       noise_factor=0.5, seed=3))
    np.testing.assert_array_equal(again[0][0], epoch1[0][0])


def test_nchw_pipeline_transposes_the_images():
    images = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    [(inputs, _)] = _batches(pipeline.make_dataset(images, batch_size=4, training=False,
                                               data_format="channels_first"))
    np.testing.assert_allclose(inputs, images.transpose(0, 3, 1, 2) / 255, atol=1e-6)


def test_in_memory_noisy_inputs_are_the_same_images_in_either_layout():
    """summaries (the model's layout) and export_embeddings (NHWC) draw fixed noisy inputs
    from one seed: the projector's codes must not depend on the layout trained."""
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 2), dtype=np.uint8)
    nhwc, clean = pipeline.noisy_inputs(images, 0.5, np.random.default_rng(1))
    nchw, clean_nchw = pipeline.noisy_inputs(images, 0.5, np.random.default_rng(1), "channels_first")
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(clean_nchw, clean.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(clean, images / 255, atol=1e-6)
    assert nhwc.dtype == clean.dtype == np.float32
    assert 0 <= nhwc.min() and nhwc.max() <= 1 and np.abs(nhwc - clean).mean() > 0.1
    inputs, clean = pipeline.noisy_inputs(images, 0.0, np.random.default_rng(1), "channels_first")
    assert inputs is clean and clean.shape == (3, 2, 5, 4)


def test_every_evaluation_batch_gives_each_replica_an_image():
    """Every split size, batch size and replica count the checks let through: a last batch
    smaller than the replica count left a replica with no image, which oneDNN's
    convolutions refuse and the VAE's mean KL turned into NaN. Catches batching that
    leaves such a rest, or that drops, repeats or reorders an image to avoid it."""
    for replicas in range(1, 9):
        for batch_size in range(replicas, 21):
            for count in range(replicas, 61):
                sizes = pipeline.evaluation_batches(count, batch_size, replicas)
                assert sum(sizes) == count and min(sizes) >= replicas
                assert max(sizes) <= batch_size + replicas - 1
                if not 0 < count % batch_size < replicas:  # nothing to join: plain batches
                    assert sizes == [batch_size] * (count // batch_size) + (
                        [count % batch_size] if count % batch_size else [])
    # The dataset batches as evaluation_batches says, every image once and in order: on
    # rests that join the batch before (5 % 2, 11 % 5 < 3, ...) and rests that do not.
    for replicas in (2, 3):
        for batch_size in (replicas, 5):
            for count in (replicas, 5, 6, 11):
                images = np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1)
                batches = _batches(pipeline.make_dataset(images, batch_size=batch_size,
                                                         training=False, replicas=replicas))
                assert [len(x) for x, _ in batches] == pipeline.evaluation_batches(
                    count, batch_size, replicas), (count, batch_size, replicas)
                order = np.rint(np.concatenate([y.ravel() for _, y in batches]) * 255)
                np.testing.assert_array_equal(order, np.arange(count))


@pytest.mark.parametrize("replicas, batch_size, splits, words", [
    (4, 3, {"validation": 10, "test": 10}, "--batch_size 3 is smaller than the 4 replicas"),
    (4, 8, {"validation": 10, "test": 3}, "the test split has 3 images, fewer than the 4"),
])
def test_a_batch_or_split_smaller_than_the_replicas_is_refused(replicas, batch_size, splits,
                                                               words):
    from tf_autoencoder.errors import Error

    with pytest.raises(Error, match=words):
        pipeline.check_replicas(replicas, batch_size, splits)
    pipeline.check_replicas(replicas, batch_size=replicas, splits={"test": replicas})


def test_evaluation_noise_can_follow_from_the_seed_alone():
    """Validation and test inputs are noised the same on every pass and in every dataset
    made with the seed: a resumed run's test metrics are the uninterrupted run's."""
    images = np.full((40, 8, 8, 1), 128, np.uint8)

    def passes(seed):
        ds = pipeline.make_dataset(images, batch_size=16, training=False, noise_factor=0.5,
                                   seed=seed, new_noise_each_pass=False)
        return [np.concatenate([x for x, _ in _batches(ds)]) for _ in range(2)]

    first, second = passes(3)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(passes(3)[0], first)
    assert not np.allclose(passes(4)[0], first)
    assert np.std(first - 128 / 255) > 0.3
