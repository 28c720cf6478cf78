"""Smoke runs of the benchmark scripts (tiny sizes, one step), so they keep working.
They assert that each script runs and reports sane numbers, never how fast anything is."""
import os
import re
import sys

import pytest

from conftest import REPO, run_python


def run_benchmark(*args):
    return run_python(*args, timeout=600)


def test_train_speed_runs_both_frameworks():
    pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    # The head-to-head against a DataLoader over the arrays (--reference dataloader); the
    # settings against the arrays as one tensor.
    result = run_benchmark("benchmarks/train_speed.py", "--quick", "--settings",
                           "NHWC float32,NHWC float32 on CPU replicas", "--reference", "dataloader")
    assert result.returncode == 0, result.stderr
    assert "reading the IDX arrays through a DataLoader" in result.stdout
    # The head-to-head comes first: one pair after the warm-up pair, then its summary.
    pairs = [line for line in result.stdout.splitlines() if line.startswith("| 2 |")]
    assert len(pairs) == 1 and pairs[0].count("x |") == 1  # the pair's ratio
    assert "Median ratio" in result.stdout and "Test BCE after 2 epochs: ours" in result.stdout
    assert "head to head, epoch 1: ours " in result.stdout  # the progress line
    lines = [line for line in result.stdout.splitlines()
             if "images/s" in line and not line.startswith(("|", "`", "head to head"))]
    assert lines[0].startswith("PyTorch ") and "reference" in lines[0]
    # Marked as the default where --precision auto picks float32 (a CPU without bfloat16).
    assert lines[1].startswith(("tf-autoencoder NHWC float32: ",
                                "tf-autoencoder NHWC float32 (the default here): "))
    assert lines[2].startswith(f"tf-autoencoder NHWC float32 on {os.cpu_count()} CPU replicas")
    assert "input pipeline with noise" in lines[-1]


def test_the_dataloader_reference_gives_the_idx_arrays_pixels():
    """torch_reference.idx_image through Images: each example is the array's image, as a
    float (C, H, W) tensor in [0, 1]."""
    pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    import numpy as np

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import torch_reference

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    dataset = torch_reference.Images(images, torch_reference.idx_image)
    for index in range(3):
        np.testing.assert_array_equal(dataset[index].numpy(),
                                      images[index].transpose(2, 0, 1) / np.float32(255))


@pytest.mark.parametrize("path", ["photos", "png", "tfds"])
def test_train_speed_head_to_head_on_stored_images(path):
    """--path photos|png|tfds --quick: ours on the folder as `train --data_dir` reads it,
    or on a local TFDS dataset as `train --dataset` does, the reference through a
    DataLoader over the same files or a TFDS data source of the same examples; one pair
    after the warm-up, both models of the same size, and every figure of where the time
    goes; RESULTS.md left alone."""
    pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    if path != "photos" and not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("dataset-fashion-mnist is not installed")
    results = os.path.join(REPO, "benchmarks", "RESULTS.md")
    before = open(results).read()
    result = run_benchmark("benchmarks/train_speed.py", "--path", path, "--quick")
    assert result.returncode == 0, result.stderr
    assert "head to head, epoch 1: ours " in result.stdout
    pairs = re.findall(r"^\| 2 \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)x \|", result.stdout, re.M)
    assert len(pairs) == 1 and all(float(v.replace(",", "")) > 0 for v in pairs[0])
    weights = re.search(r"make_training_epochs, ([\d,]+) weights.*PyTorch \(([\d,]+) weights",
                        result.stdout)
    assert weights and weights[1] == weights[2]  # the same architecture and size
    rows = dict(re.findall(r"^\| ((?:decoding|input|training|end).+?) \| ([\d,]+) \|",
                           result.stdout, re.M))
    assert len(rows) == 8 and all(int(v.replace(",", "")) > 0 for v in rows.values())
    reference = re.findall(r"^\| (?:input pipeline alone: ours|training step alone|end to "
                           r"end).+\| [\d,]+ \| ([\d,]+) \|$", result.stdout, re.M)
    assert len(reference) == 4 and all(int(v.replace(",", "")) > 0 for v in reference)
    assert re.search(r"Our step by op type .*: .*Conv2D", result.stdout)
    assert ("--num_filters 32,64,64" in result.stdout) == (path == "photos")
    if path == "tfds":
        # Ours read the dataset through our TFDS source, and both trained on the 300
        # examples stored less the 25 (5,000 / 60,000) our source holds out to validate.
        assert "the TFDS source (TensorFlow Datasets 'fashion_mnist_idx'" in result.stdout
        assert "275 training images" in result.stdout and "streamed from the TFDS files" \
            in result.stdout
        assert weights[1] == "7,873"  # the post's model: train chooses none for TFDS data
    assert open(results).read() == before


def test_torch_reference_mirrors_the_photographs_model_size():
    """The PyTorch photographs' model has as many weights as the model `train --data_dir`
    chooses for 64x64 colour images, and gives logits of the image's shape."""
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    from tf_autoencoder import Config, build_autoencoder, image_defaults
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from torch_reference import PhotoAutoencoder

    chosen, _ = image_defaults.choose([64, 64, 3], 2000, {})
    architecture = {k: chosen[k] for k in ("num_filters", "downsample", "code_size",
                                           "linear_path")}
    ours = build_autoencoder(Config(image_shape=[64, 64, 3], precision="float32",
                                    **architecture).validate())
    reference = PhotoAutoencoder((3, 64, 64), tuple(chosen["num_filters"]), chosen["code_size"])
    assert sum(p.numel() for p in reference.parameters()) == ours.count_params()
    assert reference(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_torch_reference_has_the_posts_7873_weights():
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from torch_reference import ConvAutoencoder

    model = ConvAutoencoder()
    assert sum(p.numel() for p in model.parameters()) == 7873
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_torch_reference_computes_what_our_model_does_with_the_same_weights():
    """The reference is the same function, not just the same weight count: TF's 'same'
    padding of transposed convs must be mirrored exactly, or PyTorch's output shifts."""
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    import numpy as np

    from tf_autoencoder import Config, build_autoencoder
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from torch_reference import ConvAutoencoder

    model = build_autoencoder(Config(image_shape=[28, 28, 1], precision="float32").validate())
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    reference = ConvAutoencoder()
    ours = [layer for part in model.parts for layer in part.layers if layer.weights]
    theirs = [m for m in reference.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(ours) == len(theirs) == 10
    with torch.no_grad():
        for layer, module in zip(ours, theirs):
            kernel, bias = (w.numpy() for w in layer.weights)
            # Keras: (kh, kw, in, out), transposed (kh, kw, out, in); PyTorch: (out, in, kh, kw),
            # transposed (in, out, kh, kw): the same permutation for both.
            module.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            module.bias.copy_(torch.from_numpy(bias))
        images = rng.random((4, 28, 28, 1), dtype=np.float32)
        theirs_out = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(theirs_out.transpose(0, 2, 3, 1), np.asarray(model(images)),
                               atol=1e-4)


def test_inference_speed_measures_every_runtime_and_keras(trained_run):
    model_dir, _ = trained_run
    before = sorted(os.listdir(os.path.join(model_dir, "export")))
    result = run_benchmark("benchmarks/inference_speed.py", "--quick", "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(.+): batch 1 p50 ([\d.]+) ms, p99 ([\d.]+) ms; batch 256 ([\d,]+) "
                      r"images/s$", result.stdout, re.M)
    runtimes = ("SavedModel (TensorFlow)", "LiteRT, XNNPACK", "ONNX Runtime")
    expected = [f"{runtime} `{signature}`" for signature in ("encode", "serving_default")
                for runtime in runtimes]
    assert [row[0] for row in rows] == expected + ["Keras `model.encoder.predict`",
                                                   "Keras `model.predict`"]
    for _, p50, p99, images_per_s in rows:
        assert 0 < float(p50) <= float(p99) and int(images_per_s.replace(",", "")) > 0
    sizes = dict(re.findall(r"^(.+): ([\d,]+) bytes$", result.stdout, re.M))
    # The SavedModel, model.tflite and the four .onnx files.
    assert len(sizes) == 6 and all(int(size.replace(",", "")) > 1000 for size in sizes.values())
    # It exports into a temporary folder, not into the run.
    assert sorted(os.listdir(os.path.join(model_dir, "export"))) == before


def test_profile_step_ranks_the_ops_of_a_training_step(tmp_path):
    result = run_benchmark("benchmarks/profile_step.py", "--quick", "--precision", "float32",
                           "--logdir", str(tmp_path / "profile"))
    assert result.returncode == 0, result.stderr
    assert "channels_last float32, one device:" in result.stdout
    assert "ms per step" in result.stdout
    by_type = result.stdout.split("by op type")[1].split("by op (")[0]
    assert "Conv2D" in by_type  # the model's convolutions were profiled
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def test_sub_pixel_benchmark_compares_both_paths():
    result = run_benchmark("benchmarks/sub_pixel.py", "--quick")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ms/step, sub-pixel") == 2
    assert "plain / sub-pixel: median of pair ratios" in result.stdout


def test_durability_benchmark_reports_both_sides_and_an_epoch(tmp_path):
    result = run_benchmark("benchmarks/durability.py", "--pairs", "2", "--no_write",
                           "--data_dir", str(tmp_path / "none"))  # the MNIST sample instead
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| epoch checkpoint")
            or line.startswith("| atomic small file")]
    assert len(rows) == 2 and all(row.count(" ms |") == 2 for row in rows)
    assert "One training epoch of the default model on 4,000 images" in result.stdout


def test_anomaly_benchmark_smoke(tmp_path):
    """--quick: classes 0 and 1 of the MNIST sample, one seed, one epoch; every method's
    test AUROC in the table, each trained autoencoder scored four ways, with the published
    figures beside them; a rerun keeps the hand-written reading of its section."""
    out = tmp_path / "QUALITY.md"
    mark = "<!-- reading: written by hand; a rerun keeps what follows -->"
    out.write_text(f"<!-- section: anomaly-mnist_sample -->\nold table\n{mark}\n"
                   "**Reading.** By hand.\n<!-- end section -->\n")
    result = run_benchmark("benchmarks/anomaly.py", "--quick", "--out", str(out),
                           "--variants", "bce,code16_noise", "--scores", "mse,ssim,code,mse+code")
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    section = text.split("<!-- section: anomaly-mnist_sample -->")[1]
    assert "old table" not in section and f"{mark}\n**Reading.** By hand.\n" in section
    assert "| AE bce, 1 - SSIM | AE bce, code distance | AE bce, MSE + code distance |" in text
    rows = re.findall(r"^\| (\d)  \|" + r" ([\d.]+) \|" * 11 + "$", text, re.M)
    assert [row[0] for row in rows] == ["0", "1"]
    aurocs = [[float(value) for value in row[1:]] for row in rows]
    assert all(0 <= value <= 1 for row in aurocs for value in row)
    # PCA on raw pixels tells a digit from the others (the baseline is computed, not faked),
    # and so does the distance of a code to the normal codes, even after one epoch.
    assert all(row[9] > 0.9 and row[2] > 0.9 for row in aurocs)
    assert all(row[8] in row[:8] for row in aurocs)  # the chosen one is one of the eight
    assert re.search(r"ae tuned: (bce|code16_noise)/(mse|ssim|code|mse\+code) x", text)
    assert "Deep SVDD 0.8858" in text and "reconstruction error 0.9037" in text


def test_data_pipeline_benchmark_smoke():
    """--quick: 400 PNG files through a cache file, trained for an epoch in a process of
    its own; every speed figure measured on 200; RESULTS.md left alone."""
    fashion = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(fashion):
        pytest.skip("dataset-fashion-mnist is not installed")
    results = os.path.join(REPO, "benchmarks", "RESULTS.md")
    before = open(results).read()
    result = run_benchmark("benchmarks/data_pipeline.py", "--quick", "--data_dir", fashion)
    assert result.returncode == 0, result.stderr
    memory = re.findall(r"^\| ([\d,]+) \| (files|cache file) \| ([\d,]+) \| [\d.]+ \|$",
                        result.stdout, re.M)
    assert [(count, source) for count, source, _ in memory] == [("400", "cache file")]
    speeds = re.findall(r"^\| (.+) \| ([\d,]+) \|$", result.stdout, re.M)
    assert len(speeds) == 8 and all(int(value.replace(",", "")) > 0 for _, value in speeds)
    assert re.search(r"from the files ran at \*\*\d+%\*\* .* from the cache file at \*\*\d+%\*\*",
                     result.stdout)
    assert open(results).read() == before


def test_command_exit_benchmark_times_both_endings_of_one_predict(trained_run):
    result = run_benchmark("benchmarks/command_exit.py", "--quick", "--run", trained_run[0])
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (exit_with \(now\)|sys.exit \(before\)) \| ([\d.]+) \| ([\d.]+) \|$",
                      result.stdout, re.M)
    assert [row[0] for row in rows] == ["exit_with (now)", "sys.exit (before)"]
    assert all(float(wall) > 0 and float(cpu) > 0 for _, wall, cpu in rows)
    assert "now / before, pair by pair: median " in result.stdout



def test_epoch_starts_benchmark_trains_each_way_and_counts_idle_seconds():
    """--quick: the three ways of feeding fit on the MNIST sample, 3 epochs of 2 steps
    each; a row per way with a speed and a core count per epoch; RESULTS.md left alone."""
    results = os.path.join(REPO, "benchmarks", "RESULTS.md")
    before = open(results).read()
    result = run_benchmark("benchmarks/epoch_starts.py", "--quick")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (one dataset|a new iterator)[^|]* \| ([\d, ]+) \| ([\d., ]+) \| ([\d, ]+) \|$",
                      result.stdout, re.M)
    assert [way for way, *_ in rows] == ["one dataset", "a new iterator", "a new iterator"]
    for _, speeds, cores, waits in rows:
        assert len(speeds.split(", ")) == 3 and all(float(v.replace(",", "")) > 0
                                                    for v in speeds.split(", "))
        assert len(cores.split(", ")) == 3 and len(waits.split(", ")) == 2  # epochs 2 and 3
    assert open(results).read() == before
