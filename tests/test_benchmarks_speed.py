"""Smoke runs of the training-speed benchmarks and checks of their PyTorch reference
(tiny sizes, one step), so they keep working. They assert that each script runs and
reports sane numbers, never how fast anything is. In a file of their own: the suite
runs each file on one worker, so the benchmarks' smoke runs, the suite's heaviest group,
are split over two files that two workers can run side by side."""
import os
import re
import sys

import pytest

from conftest import REPO, run_benchmark


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
