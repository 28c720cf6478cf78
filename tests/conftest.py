import csv
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

# As the command line sets it (logs.py): after start-up, TensorFlow C++ logs fatal errors only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A suite started in the background of a non-interactive shell (`pytest ... &`) inherits
# SIGINT ignored, and every command it starts with it, so Ctrl-C tests would wait for
# their command forever. They model a terminal, where Ctrl-C reaches the command: give
# this process Python's handler, which the processes it starts get back as the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest

import forked_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(directory, n_train=120, n_test=20, size=28, gz=False, seed=0):
    """Writes the four standard IDX files of random digits; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for name, array in arrays.items():
        if gz:
            with gzip.open(os.path.join(directory, name + ".gz"), "wb") as f:
                f.write(idx_bytes(array))
        else:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(idx_bytes(array))
    return arrays


@pytest.fixture
def idx_dir(tmp_path):
    directory = tmp_path / "idx"
    write_idx_dir(directory)
    return str(directory)


def run_python(*args, env=None, timeout=300, fresh=False):
    """`python *args` from the repository root, so this checkout's package is the one
    imported; in a process forked after TensorFlow's import (forked_commands.py) unless
    `fresh`. env: the whole environment (default: this process's)."""
    return forked_commands.run(list(args), cwd=REPO, env=env, timeout=timeout, fresh=fresh)


def run_benchmark(*args):
    """A benchmark script's smoke run (run_python with a longer timeout)."""
    return run_python(*args, timeout=600)


def train_command(*args):
    return [sys.executable, os.path.join(REPO, "train.py"), *args]


def run_train(*args, env=None, cwd=None, timeout=300):
    """train.py with `args`, `env` added to this process's environment."""
    return forked_commands.run([os.path.join(REPO, "train.py"), *args], cwd=cwd,
                               env=dict(os.environ, **(env or {})), timeout=timeout)


def run_record(model_dir) -> dict:
    """What a run trained with: config.json's settings, with run.json's facts (image
    shape, data read, seed, precision) over them."""
    with open(os.path.join(model_dir, "config.json")) as f:
        record = json.load(f)
    with open(os.path.join(model_dir, "run.json")) as f:
        record.update(json.load(f))
    return record


def history(model_dir):
    """history.csv's rows, one dict per epoch."""
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def latest_checkpoint(model_dir):
    with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
        return f.readline().split('"')[1]  # model_checkpoint_path: "ckpt-N"


def snapshot(path):
    """Every file under `path` with a hash of its bytes."""
    if os.path.isfile(path):
        return {path: hashlib.sha256(open(path, "rb").read()).hexdigest()}
    return {os.path.join(root, name): hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
            for root, _, names in os.walk(path) for name in names}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(model_dirs, args, cwds=None, env=None):
    """One train.py process per entry of `model_dirs`, as the workers of a local
    multi-worker cluster (worker 0, the chief, first), each with `args(index)`; returns
    them. Pass them to `wait_all`."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(model_dirs))]}
    processes = []
    for index, model_dir in enumerate(model_dirs):
        worker_env = dict(os.environ, **(env(index) if env else {}), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(forked_commands.start(
            [os.path.join(REPO, "train.py"), *args(index), "--model_dir", model_dir,
             "--distribute", "multi_worker"],
            cwd=cwds[index] if cwds else None, env=worker_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return processes


def wait_all(processes, timeout=240):
    """[(stdout, stderr)] of each process once all ended; kills what is left on failure."""
    try:
        return [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def start_paused(args, step, **popen):
    """Starts train.py with `args`, paused after global step `step` (training's
    TF_AUTOENCODER_PAUSE_AT_STEP hook); returns the process once it says it paused.
    Its stderr is a pipe; the lines before the pause are in `process.lines_before`."""
    env = dict(os.environ, TF_AUTOENCODER_PAUSE_AT_STEP=str(step))
    process = forked_commands.start([os.path.join(REPO, "train.py"), *args],
                                    stderr=subprocess.PIPE, env=env,
                                    **{"stdout": subprocess.DEVNULL, **popen})
    process.lines_before = []
    for line in process.stderr:  # ends at the pause, or at EOF if the process died
        if line == f"paused at step {step}\n":
            return process
        process.lines_before.append(line)
    process.wait(timeout=60)
    raise AssertionError(f"train.py exited {process.returncode} before step {step}: "
                         + "".join(process.lines_before))


def reference_anomaly_maps(images, reconstructions, kind="l2", sigma=4.0):
    """(n, H, W) anomaly maps by NumPy, scipy and scikit-image, independent of the
    package: the channel-mean squared error (l2) or 1 - SSIM of Wang et al. 2004 per channel
    then averaged (ssim), smoothed by scipy's Gaussian (symmetric 'reflect' edges, 4 sigma)."""
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    maps = []
    for image, reconstruction in zip(np.asarray(images, np.float64),
                                     np.asarray(reconstructions, np.float64)):
        if kind == "l2":
            per_pixel = np.mean(np.square(image - reconstruction), axis=-1)
        else:
            per_pixel = 1.0 - np.mean([structural_similarity(
                image[..., c], reconstruction[..., c], gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0, full=True)[1]
                for c in range(image.shape[-1])], axis=0)
        if sigma:
            per_pixel = ndimage.gaussian_filter(per_pixel, sigma=sigma, mode="reflect",
                                                truncate=4.0)
        maps.append(per_pixel)
    return np.stack(maps)


def keras_outputs(model, config, images):
    """What the Keras `model` (of `config`), in float32, predicts for NHWC `images`:
    reconstructions, codes and the decoded codes, all NHWC (codes included).

    Graph mode (predict_on_batch), as training and the exports run. The layout is changed
    here with numpy, apart from the package's own layout.py and its NHWC serving twin, so
    that a mistake there shows.
    """
    import tensorflow as tf
    from tf_autoencoder.model.models import float32_twin

    # The exports compute in float32 whatever precision trained; so does the reference.
    model = float32_twin(model, config)
    to_model = (lambda x: x.transpose(0, 3, 1, 2)) if config.channels_first else (lambda x: x)
    to_nhwc = ((lambda x: x.transpose(0, 2, 3, 1) if x.ndim == 4 else x)
               if config.channels_first else (lambda x: x))
    codes = model.encoder.predict_on_batch(to_model(images))
    return {
        "reconstructions": to_nhwc(tf.sigmoid(model.predict_on_batch(to_model(images))).numpy()),
        "codes": to_nhwc(codes),
        "decoded": to_nhwc(tf.sigmoid(model.decoder.predict_on_batch(codes)).numpy()),
    }


# TensorFlow's C++ start-up logging (absl), which the commands keep off the terminal.
TF_CPP_LOG_LINE = re.compile(r"[IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog")


def tensorflow_log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if TF_CPP_LOG_LINE.match(line)]


def error_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up logging, which it prints whatever
    TF_CPP_MIN_LOG_LEVEL says."""
    return [line for line in stderr.splitlines()
            if line and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)]


# --- training runs shared by several test files ------------------------------------------
# Each trains once per test session, under pytest-xdist too (the first worker to ask
# trains, the others wait for it). Tests only read them: one that trains on, exports
# or otherwise writes copies the run first (copy_run).

def shared_run(tmp_path_factory, name, make):
    """Calls make(directory) -> CompletedProcess once per session; returns (directory/run,
    that process). `make` trains into directory/run."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    base = root / f"shared-{name}"
    base.mkdir(exist_ok=True)
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / "process.json"
        if not done.exists():
            process = make(base)
            done.write_text(json.dumps({"args": process.args, "returncode": process.returncode,
                                        "stdout": process.stdout, "stderr": process.stderr}))
        saved = json.loads(done.read_text())
    process = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"],
                                          saved["stderr"])
    assert process.returncode == 0, process.stderr
    return str(base / "run"), process


def copy_run(model_dir, destination):
    """A copy of a shared run that a test may train on or write to; returns its path."""
    shutil.copytree(model_dir, destination)
    return str(destination)


TRAINED_RUN = ["--dataset", "mnist_sample", "--epochs", "1", "--batch_size", "32", "--seed", "3"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One epoch on the MNIST sample (NHWC, 125 steps); training exports export/1.
    Returns (model_dir, the train.py process)."""
    return shared_run(tmp_path_factory, "trained", lambda base: run_python(
        "train.py", *TRAINED_RUN, "--model_dir", str(base / "run")))


@pytest.fixture(scope="session")
def denoising_run(tmp_path_factory):
    """Two epochs of a denoising model on the MNIST sample (batch 256: 15 steps per epoch),
    with a PNG of reconstructions per epoch and the projector of 200 test codes.
    Returns (model_dir, the train.py process)."""
    return shared_run(tmp_path_factory, "denoising", lambda base: run_python(
        "train.py", *denoising_args(str(base / "run")), "--epochs", "2"))


def denoising_args(model_dir):
    """denoising_run's flags but --epochs, for model_dir."""
    return ["--dataset", "mnist_sample", "--seed", "3", "--noise_factor", "0.3",
            "--embedding_images", "200", "--model_dir", model_dir,
            "--save_images", os.path.join(model_dir, "images")]


# The reference run of the resume and distribution tests: 62 steps per epoch. float32
# whatever the CPU: the distribution tests' tolerances are float32's.
REFERENCE_RUN = ["--dataset", "mnist_sample", "--seed", "3", "--batch_size", "64",
                 "--precision", "float32", "--epochs", "3"]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """Three uninterrupted epochs on the MNIST sample, seed 3, batch 64. Returns model_dir."""
    return shared_run(tmp_path_factory, "reference", lambda base: run_python(
        "train.py", *REFERENCE_RUN, "--model_dir", str(base / "run")))[0]


@pytest.fixture(scope="session")
def nchw_idx_run(tmp_path_factory):
    """One NCHW epoch on an IDX folder of 300 random training images (batch 64), in
    mixed_bfloat16 whatever the CPU (the default, auto, picks it only on some CPUs).
    Returns (model_dir, the train.py process)."""
    def make(base):
        write_idx_dir(base / "idx", n_train=300, n_test=40)
        return run_python("train.py", "--data_dir", str(base / "idx"), "--data_format", "NCHW",
                          "--precision", "mixed_bfloat16", "--epochs", "1", "--batch_size", "64",
                          "--seed", "4", "--model_dir", str(base / "run"))
    return shared_run(tmp_path_factory, "nchw_idx", make)


def assert_shares_add_up(images, replicas=4, workers=2):
    """Each worker's replicas' batches (training and evaluation), step by step, add up to
    the batch one device gets, noisy inputs too."""
    import tensorflow as tf

    from tf_autoencoder.data.pipeline import make_dataset, make_training_epochs

    for make in (lambda context: make_training_epochs(images, batch_size=12, epochs=range(1),
                                                      seed=5, noise_factor=0.5, context=context),
                 lambda context: make_dataset(images, batch_size=12, training=False,
                                              noise_factor=0.5, seed=3, replicas=replicas,
                                              context=context)):
        single = [(x.numpy(), y.numpy()) for x, y in make(None)]
        shares = [[(x.numpy(), y.numpy()) for x, y in make(tf.distribute.InputContext(
            num_input_pipelines=workers, input_pipeline_id=w, num_replicas_in_sync=replicas))]
            for w in range(workers)]
        per_worker = replicas // workers
        assert all(len(share) == len(single) * per_worker for share in shares)
        for step, (inputs, clean) in enumerate(single):
            parts = [part for share in shares
                     for part in share[step * per_worker:(step + 1) * per_worker]]
            assert all(len(x) for x, _ in parts)
            np.testing.assert_array_equal(np.concatenate([x for x, _ in parts]), inputs)
            np.testing.assert_array_equal(np.concatenate([y for _, y in parts]), clean)

