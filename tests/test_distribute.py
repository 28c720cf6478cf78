"""tf.distribute: --distribute mirrored on logical CPU devices, two local workers with
MultiWorkerMirroredStrategy, and the checks made before TensorFlow loads."""
import json
import os

import numpy as np
import pytest

from conftest import (REFERENCE_RUN, assert_shares_add_up, error_lines, history, idx_bytes,
                      latest_checkpoint, run_train, start_workers, wait_all)
from tf_autoencoder.config import ConfigError
from tf_autoencoder.run.distribute import cpu_cores, read_tf_config

SEED = "3"
# 4,000 sample images // 64 = 62 global steps per epoch, whatever the replicas.
RUN = ["--dataset", "mnist_sample", "--seed", SEED, "--batch_size", "64", "--precision", "float32"]
assert RUN == REFERENCE_RUN[:-2]  # the single-device run is conftest's reference_run
STEPS_PER_EPOCH = 4000 // 64
# Mirrored and single-device runs see the same batches from the same weights; only the
# order of float additions differs (each replica sums its half, then the halves are
# summed). Over 2 epochs on seeds 1, 2 and 3 the per-epoch loss and val_loss differed
# by at most 1.1e-4 relative after the first epoch and 4.6e-4 after the second. A
# wrong split moves them by more: a one-epoch run on other shuffles of the same data
# differed by 7.6e-3 in val_loss. 2e-3 sits between the two. (In mixed_bfloat16 the
# rounding alone moved val_loss by 2.5e-3 after one epoch, hence float32 here.)
LOSS_RTOL = 2e-3


def assert_same_losses(rows, expected):
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        for name in ("loss", "val_loss"):
            assert float(row[name]) == pytest.approx(float(want[name]), rel=LOSS_RTOL), name


@pytest.fixture(scope="module")
def single_and_mirrored(request, tmp_path_factory):
    """Epochs on one device (conftest's reference_run: 3 epochs) and two epochs on two
    logical CPU devices, same seed and data."""
    mirrored = str(tmp_path_factory.mktemp("distribute") / "mirrored")
    second = run_train(*RUN, "--epochs", "2", "--model_dir", mirrored,
                       "--distribute", "mirrored", "--cpu_replicas", "2")
    assert second.returncode == 0, second.stderr
    # Only now: under pytest-xdist another worker may be training it meanwhile.
    single = request.getfixturevalue("reference_run")
    return single, mirrored, second


def test_mirrored_on_two_cpu_replicas_reaches_the_single_device_loss(single_and_mirrored):
    single, mirrored, result = single_and_mirrored
    assert "MirroredStrategy, 2 replicas in sync" in result.stdout
    threads = max(1, cpu_cores() // 2)  # each replica's ops get half the cores
    assert f"here), {threads} thread{'s' if threads > 1 else ''} per op" in result.stdout
    assert_same_losses(history(mirrored), history(single)[:2])
    # The optimizer counts global steps (the learning-rate schedule's clock): the
    # checkpoint is numbered by it.
    assert latest_checkpoint(mirrored) == f"ckpt-{2 * STEPS_PER_EPOCH}"
    assert latest_checkpoint(single) == f"ckpt-{3 * STEPS_PER_EPOCH}"
    assert os.listdir(os.path.join(mirrored, "export")) == ["1"]
    assert json.load(open(os.path.join(mirrored, "config.json")))["cpu_replicas"] == 2


def write_ramp_idx_dir(directory, n_train=300, n_test=15, n_validation=25):
    """IDX files of 28x28 images, each a grey level with a little noise. In the
    validation split (the first n_validation training images) and in the test split the
    level climbs from black to mid-grey (128), so that the images of the first and of
    the second half of either split score very differently: a model that outputs about
    0.5 everywhere, as one after a few steps does, has an MSE near 0.25 on black images
    and near 0 on grey ones. Random images (conftest.write_idx_dir) all score alike, and
    then a metric of half of a split is that of all of it."""
    rng = np.random.default_rng(0)

    def ramp(n, period):
        level = 128 * (np.arange(n) % period) / (period - 1)
        images = level[:, None, None] + rng.integers(-8, 9, (n, 28, 28))
        return np.clip(images, 0, 255).astype(np.uint8)

    os.makedirs(directory)
    arrays = {"train-images-idx3-ubyte": ramp(n_train, n_validation),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": ramp(n_test, n_test),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, array in arrays.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(idx_bytes(np.asarray(array, np.uint8)))


def test_mirrored_evaluates_a_split_whose_only_batch_the_replicas_share_unevenly(tmp_path):
    """25 validation and 15 test images, batch 64: each split is one batch, 13 + 12 and
    8 + 7 images per replica. Keras' evaluate averages the first batch over the replicas
    to learn its shapes, which fails on unequal shapes unless distribute.py steps in.

    The metrics must be those of every image of the split: those of the same command on
    one device (LOSS_RTOL), and those the saved model scores on the split itself. On
    write_ramp_idx_dir's images an evaluation that scores one replica's share alone is
    off by 70% in MSE (replicas' shares: 0.142 and 0.017, all: 0.082), one that averages
    the replicas' means unweighted by 3% (0.080), one that drops an image by 4%; the
    BCE, near ln 2 for every image after 4 steps, moves by 2e-4 at most. (On random
    images, as before, all of these were within LOSS_RTOL of the right value.)"""
    from tf_autoencoder.run.evaluation import reconstruction_metrics
    from tf_autoencoder.serving.loading import load_finished_model
    from tf_autoencoder.data.sources import load_data

    write_ramp_idx_dir(tmp_path / "idx")  # 275 train / 25 validation, 15 test
    # float32 on both: LOSS_RTOL is float32's (see its comment).
    command = ["--data_dir", str(tmp_path / "idx"), "--batch_size", "64", "--epochs", "1",
               "--seed", SEED, "--embedding_images", "0", "--precision", "float32"]
    result = run_train(*command, "--model_dir", str(tmp_path / "run"),
                       "--distribute", "mirrored", "--cpu_replicas", "2")
    assert result.returncode == 0, result.stderr
    [row] = history(str(tmp_path / "run"))
    assert float(row["val_loss"]) > 0
    test_metrics = json.load(open(tmp_path / "run" / "test_metrics.json"))["metrics"]
    assert test_metrics["loss"] > 0

    single = run_train(*command, "--model_dir", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    [single_row] = history(str(tmp_path / "single"))
    single_test = json.load(open(tmp_path / "single" / "test_metrics.json"))["metrics"]
    for name in ("loss", "bce", "mse", "rmse"):
        assert float(row[f"val_{name}"]) == pytest.approx(float(single_row[f"val_{name}"]),
                                                          rel=LOSS_RTOL), name
        assert test_metrics[name] == pytest.approx(single_test[name], rel=LOSS_RTOL), name

    # The saved model (the weights that were evaluated: one epoch, no resume) on the
    # splits, in float32 with no noise, in one batch: what a right evaluation reports but
    # for the order of float additions (measured: 1e-7 relative). 1e-5 is well below the
    # unweighted mean of the replicas' BCE, 2e-4 away.
    model = load_finished_model(str(tmp_path / "run"))
    splits = load_data(data_dir=str(tmp_path / "idx"))
    assert (len(splits.validation), len(splits.test)) == (25, 15)
    for split, reported in [(splits.validation, {name: float(row[f"val_{name}"])
                                                 for name in ("bce", "mse")}),
                            (splits.test, test_metrics)]:
        images = split.images.astype(np.float32) / 255
        recomputed = reconstruction_metrics(images, model.predict(images, verbose=0))
        for name in ("bce", "mse"):
            assert reported[name] == pytest.approx(recomputed[name], rel=1e-5), name


def test_mirrored_run_resumes_from_its_checkpoint(single_and_mirrored):
    _, mirrored, _ = single_and_mirrored
    result = run_train(*RUN, "--epochs", "3", "--model_dir", mirrored,
                       "--distribute", "mirrored", "--cpu_replicas", "2")
    assert result.returncode == 0, result.stderr
    assert f"Resuming from the end of epoch 2 in {mirrored}" in result.stdout
    assert [row["epoch"] for row in history(mirrored)] == ["0", "1", "2"]
    assert latest_checkpoint(mirrored) == f"ckpt-{3 * STEPS_PER_EPOCH}"
    assert sorted(os.listdir(os.path.join(mirrored, "export"))) == ["1", "2"]


def test_two_workers_train_one_epoch_and_only_the_chief_writes(tmp_path, single_and_mirrored):
    single = single_and_mirrored[0]
    model_dir = str(tmp_path / "run")
    scratch = [tmp_path / f"tmp{index}" for index in range(2)]  # TMPDIR and working directory
    for folder in scratch:
        folder.mkdir()
    # Worker 1 draws its own seed: it must train with the chief's.
    processes = start_workers(
        [model_dir, model_dir], cwds=scratch, env=lambda index: {"TMPDIR": str(scratch[index])},
        args=lambda index: [*RUN[:2], *RUN[4:], *(["--seed", SEED] if index == 0 else []),
                            "--epochs", "1"])
    outputs = wait_all(processes)
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "MultiWorkerMirroredStrategy, 2 replicas in sync" in chief_out
    assert "worker 1, not the chief" in worker_out
    assert "Exported" in chief_out and "Exported" not in worker_out

    assert sorted(os.listdir(tmp_path)) == ["run", "tmp0", "tmp1"]
    assert os.listdir(tmp_path / "tmp0") == os.listdir(tmp_path / "tmp1") == []
    assert os.listdir(os.path.join(model_dir, "export")) == ["1"]
    assert latest_checkpoint(model_dir) == f"ckpt-{STEPS_PER_EPOCH}"
    # Each worker took its half of every global batch, shuffled alike: the first epoch
    # is the single-device run's.
    assert_same_losses(history(model_dir), history(single)[:1])


@pytest.mark.parametrize("args, env, message", [
    (["--cpu_replicas", "2"], {}, "cpu_replicas applies to --distribute mirrored only"),
    (["--distribute", "mirrored", "--cpu_replicas", "0"], {}, "cpu_replicas must be >= 1"),
    (["--distribute", "mirrored", "--cpu_replicas", "8", "--batch_size", "4"], {},
     "cpu_replicas 8 is more than batch_size 4"),
    (["--distribute", "multi_worker"], {"TF_CONFIG": ""}, "needs TF_CONFIG"),
    (["--distribute", "multi_worker"], {"TF_CONFIG": "{cluster"}, "TF_CONFIG is not"),
    (["--distribute", "multi_worker"],
     {"TF_CONFIG": '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, '
                   '"task": {"type": "worker", "index": 0}}'}, "lists ps tasks"),
    (["--distribute", "multi_worker"],
     {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}'},
     "is not in its cluster"),
])
def test_distribution_settings_are_checked_before_anything_is_written(tmp_path, args, env,
                                                                       message):
    model_dir = tmp_path / "run"
    result = run_train("--dataset", "mnist_sample", "--model_dir", str(model_dir), *args, env=env)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert message in line and line.startswith("train.py: error:")
    assert not model_dir.exists()


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, ("chief", 0), True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, ("worker", 0), False),
])
def test_the_chief_is_the_chief_task_or_else_worker_0(cluster, task, chief):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}})
    role = read_tf_config({"TF_CONFIG": tf_config})
    assert role.is_chief is chief
    assert role.num_workers == sum(len(v) for v in cluster.values())


def test_two_chiefs_are_refused():
    tf_config = json.dumps({"cluster": {"chief": ["a:1", "b:1"]},
                            "task": {"type": "chief", "index": 0}})
    with pytest.raises(ConfigError, match="at most one"):
        read_tf_config({"TF_CONFIG": tf_config})


def test_training_epochs_follow_from_the_seed_and_the_epoch_alone():
    import numpy as np

    from tf_autoencoder.data.pipeline import make_training_epochs

    images = np.arange(48, dtype=np.uint8).reshape(48, 1, 1, 1)

    def epochs(first_epoch, count, dataset=None):
        dataset = dataset or make_training_epochs(
            images, batch_size=16, epochs=range(first_epoch, first_epoch + count), seed=0)
        batches = [np.rint(y.numpy().ravel() * 255).astype(int)
                   for _, y in dataset.take(3 * count)]
        return [np.concatenate(batches[3 * i:3 * i + 3]) for i in range(count)]

    stream = make_training_epochs(images, batch_size=16, epochs=range(2), seed=0)
    next(iter(stream))  # as Keras' fit does under a strategy, to build the model
    epoch0, epoch1 = epochs(0, 2, stream)
    assert sorted(epoch0.tolist()) == sorted(epoch1.tolist()) == list(range(48))
    assert not np.array_equal(epoch0, epoch1)
    assert np.array_equal(epochs(0, 1)[0], epoch0)
    assert np.array_equal(epochs(1, 1)[0], epoch1)  # a resumed run's first epoch


def test_mirrored_vae_evaluates_last_batches_smaller_than_the_replica_count(tmp_path):
    """Batch 12 on 25 validation and 13 test images leaves last batches of one image: one
    of the two replicas got none, and oneDNN's convolution failed on it (the VAE's mean
    KL over it was NaN, a false divergence). Every image must count once in every metric,
    kl included: the metrics must be those the saved model scores on the splits, here."""
    from tf_autoencoder.data.sources import load_data
    from tf_autoencoder.serving.loading import load_finished_model

    write_ramp_idx_dir(tmp_path / "idx", n_test=13)  # 275 train / 25 validation, 13 test
    result = run_train("--data_dir", str(tmp_path / "idx"), "--batch_size", "12",
                       "--epochs", "1", "--seed", SEED, "--embedding_images", "0",
                       "--precision", "float32", "--model", "variational",
                       "--model_dir", str(tmp_path / "run"),
                       "--distribute", "mirrored", "--cpu_replicas", "2")
    assert result.returncode == 0, result.stderr
    [row] = history(str(tmp_path / "run"))
    test_metrics = json.load(open(tmp_path / "run" / "test_metrics.json"))["metrics"]

    model = load_finished_model(str(tmp_path / "run"))
    splits = load_data(data_dir=str(tmp_path / "idx"))
    for split, reported in [(splits.validation, {name: float(row[f"val_{name}"])
                                                 for name in ("bce", "mse", "kl")}),
                            (splits.test, test_metrics)]:
        x = split.images.astype(np.float64) / 255
        logits = model.predict(x.astype(np.float32), verbose=0).astype(np.float64)
        bce = np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))
        mean, log_var = (np.asarray(t, np.float64) for t in model.posterior(x.astype(np.float32)))
        kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=(1, 2, 3)) / (28 * 28)
        expected = {"bce": bce.mean(), "mse": np.mean((x - 1 / (1 + np.exp(-logits))) ** 2),
                    "kl": kl.mean()}
        assert len(x) % 12 == 1
        for name, value in expected.items():
            assert reported[name] == pytest.approx(value, rel=1e-5), name


def write_level_pngs(directory, count):
    """`count` 2x3 grey PNG files, file i all of grey level i: a batch's pixels name the
    files it was read from. Returns their paths."""
    from PIL import Image

    os.makedirs(directory)
    paths = [os.path.join(directory, f"{i:03d}.png") for i in range(count)]
    for i, path in enumerate(paths):
        Image.fromarray(np.full((2, 3), i, np.uint8)).save(path)
    return paths


def test_each_worker_reads_and_decodes_only_its_share_of_every_batch(tmp_path):
    """2 workers of 2 replicas each (training itself goes through the same shares in the
    two-worker run above). 37 files, batch 12: 3 training steps; evaluation batches of
    12, 12 and 13 (the rest of 1 joins the
    batch before), whose replicas' shares are 4, 3, 3 and 3. The replicas' batches of both
    workers, step by step, add up to the batch one device gets (noisy inputs too); and
    each worker, given only its own files (the others' missing), gives the same batches:
    it never opens a file another worker trains on."""
    import tensorflow as tf

    from tf_autoencoder.data.folder import FileImages
    from tf_autoencoder.data.pipeline import make_dataset, make_training_epochs

    workers, replicas, shape = 2, 4, (2, 3, 1)
    paths = write_level_pngs(str(tmp_path / "png"), 37)
    pipelines = {
        "train": lambda files, context: make_training_epochs(
            files, batch_size=12, epochs=range(1), seed=5, noise_factor=0.5, context=context),
        "evaluate": lambda files, context: make_dataset(
            files, batch_size=12, training=False, noise_factor=0.5, seed=3, replicas=replicas,
            context=context),
    }

    def batches(dataset):
        return [(inputs.numpy(), clean.numpy()) for inputs, clean in dataset]

    def contexts():
        return [tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=w,
                                           num_replicas_in_sync=replicas) for w in range(workers)]

    files = FileImages(paths, shape)
    for name, make in pipelines.items():
        single = batches(make(files, None))
        assert [len(x) for x, _ in single] == ([12] * 3 if name == "train" else [12, 12, 13])
        shares = [batches(make(files, context)) for context in contexts()]
        per_worker = replicas // workers
        for share in shares:
            assert len(share) == len(single) * per_worker  # a batch per replica and step
        for step, (inputs, clean) in enumerate(single):
            parts = [part for share in shares
                     for part in share[step * per_worker:(step + 1) * per_worker]]
            assert all(len(x) for x, _ in parts)  # every replica gets images
            np.testing.assert_array_equal(np.concatenate([x for x, _ in parts]), inputs)
            np.testing.assert_array_equal(np.concatenate([y for _, y in parts]), clean)

        for context, share in zip(contexts(), shares):
            own = {int(level) for _, clean in share for level in np.rint(clean[:, 0, 0, 0] * 255)}
            assert 0 < len(own) < len(paths)
            only_own = FileImages([path if i in own else str(tmp_path / "elsewhere" / f"{i}.png")
                                   for i, path in enumerate(paths)], shape)
            for got, want in zip(batches(make(only_own, context)), share, strict=True):
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])


def test_each_worker_reads_only_its_share_of_a_cache_file(tmp_path):
    from tf_autoencoder.data.cache import CachedImages, write_cache
    from tf_autoencoder.data.folder import FileImages

    files = FileImages(write_level_pngs(str(tmp_path / "png"), 37), (2, 3, 1))
    write_cache(files, str(tmp_path / "cache.npy"))
    assert_shares_add_up(CachedImages(str(tmp_path / "cache.npy")))
