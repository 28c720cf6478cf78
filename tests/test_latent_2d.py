"""latent_2d.png: a two-value code space drawn, with a VAE's decoded grid."""
import fnmatch
import json
import os
import re

import keras
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage

from conftest import REPO, run_python, run_train
from tf_autoencoder import Config, build_autoencoder
from tf_autoencoder.images import image_grid
from tf_autoencoder.run.latent_2d import (GRID_SIDE, code_values, decoded_grid, grid_codes,
                                          latent_figure, model_figure, prior_values)


def vae(data_format="channels_last", seed=0):
    keras.utils.set_random_seed(seed)
    return build_autoencoder(Config(model="variational", code_size=2, image_shape=[28, 28, 1],
                                    data_format=data_format, precision="float32").validate())


def test_the_grid_takes_equally_spaced_quantiles_of_the_prior_from_the_top_left():
    """Quantiles 0.05, 0.275, ..., 0.95 of N(0, 1), the middle 90% of the prior."""
    values = prior_values(5)
    codes = grid_codes(values, values)
    np.testing.assert_allclose(values, [-1.6449, -0.5978, 0, 0.5978, 1.6449], atol=1e-4)
    np.testing.assert_allclose(codes[0], [values[0], values[-1]])  # top left: low x, high y
    np.testing.assert_allclose(codes[4], [values[-1], values[-1]])  # top right
    np.testing.assert_allclose(codes[-1], [values[-1], values[0]])  # bottom right


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_the_decoded_grid_is_the_decoders_images_of_the_grid_codes(data_format):
    model = vae(data_format)
    reference = vae("channels_last")
    reference.set_weights(model.get_weights())
    grid = decoded_grid(model.decoder, data_format, side=4)
    assert grid.images.shape == (4, 4, 28, 28, 1)
    values = prior_values(4)
    expected = keras.ops.convert_to_numpy(
        keras.ops.sigmoid(reference.decoder(grid_codes(values, values))))
    np.testing.assert_allclose(grid.images.reshape(16, 28, 28, 1), expected, atol=1e-5)


def test_the_figure_draws_every_code_in_its_labels_colour_and_the_grid():
    rng = np.random.default_rng(0)
    codes, labels = rng.normal(size=(300, 2)), rng.integers(0, 10, 300)
    grid = decoded_grid(vae().decoder, "channels_last", side=3)
    figure = latent_figure(codes, labels, [grid])
    scatter, picture = figure.axes[:2]
    points = [c for c in scatter.collections if isinstance(c, PathCollection)]
    assert [c.get_label() for c in points] == [str(label) for label in range(10)]
    for label, collection in enumerate(points):
        np.testing.assert_array_equal(collection.get_offsets(), codes[labels == label])
    colours = {tuple(c.get_facecolor()[0]) for c in points}
    assert len(colours) == 10  # one colour per label
    legend = [t.get_text() for t in scatter.get_legend().get_texts()]
    assert legend == [str(label) for label in range(10)]
    image, = [a for a in picture.get_children() if isinstance(a, AxesImage)]
    np.testing.assert_array_equal(image.get_array(), image_grid(list(grid.images), pad=0)[..., 0])


def test_a_vae_picture_decodes_where_its_codes_are_when_they_miss_the_prior():
    """Codes far from N(0, I), as after a few epochs (measured: around (-2.8, -1.1)): a
    picture with the prior's grid alone decodes no code the data has. One panel must
    decode a grid that covers the codes, be the decoder's images of that grid, and be
    outlined in the scatter, beside the prior's."""
    model = vae()
    rng = np.random.default_rng(0)
    codes = rng.normal([-2.8, -1.1], 0.3, size=(400, 2)).astype(np.float32)
    labels = rng.integers(0, 10, 400)
    scatter, *panels = model_figure(model, codes, labels, "channels_last").axes
    images = [next(a for a in p.get_children() if isinstance(a, AxesImage)) for p in panels]
    inside = [np.mean((codes[:, 0] >= left) & (codes[:, 0] <= right) & (codes[:, 1] >= bottom)
                      & (codes[:, 1] <= top)) for left, right, bottom, top in
              (image.get_extent() for image in images)]
    assert inside[0] == 0  # the prior's grid: no code in it
    (over_codes,) = [i for i, share in enumerate(inside) if share >= 0.8]
    grid = images[over_codes].get_array()
    xs, ys = code_values(codes)
    expected = keras.ops.convert_to_numpy(keras.ops.sigmoid(model.decoder(grid_codes(xs, ys))))
    tiles = expected.reshape(GRID_SIDE, GRID_SIDE, 28, 28, 1)
    np.testing.assert_allclose(grid, image_grid(list(tiles), pad=0)[..., 0], atol=1)
    outlines = [patch.get_bbox().bounds for patch in scatter.patches]
    assert len(outlines) == 2  # where each grid lies, drawn over the codes
    for outline, image in zip(outlines, images):
        left, right, bottom, top = image.get_extent()
        np.testing.assert_allclose(outline, (left, bottom, right - left, top - bottom))


def test_without_a_grid_the_figure_is_the_scatter_alone():
    codes, labels = np.zeros((4, 2)), np.array([3, 3, 7, 7])
    figure = latent_figure(codes, labels)
    assert len(figure.axes) == 1  # the scatter; its legend is not an axes
    assert [c.get_label() for c in figure.axes[0].collections] == ["3", "7"]


def listed_names(text):
    """The top-level names a listing of model_dir gives: the first column's backticked
    entries of reliability.md's table (`export/1/`, `a`, `b` ...), or the first column of
    model_dir.py's docstring (entries before two spaces, `a/ b/` or `a, b`)."""
    names = set()
    if "| path | what |" in text:
        table = text.split("| path | what |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
        for row in table.splitlines():
            names.update(re.findall(r"`([^`]+)`", row.strip("|").split("|")[0]))
    else:
        listing = text.split("model_dir/\n", 1)[1].split('"""', 1)[0]
        for line in listing.splitlines():
            if line.startswith("  ") and not line.startswith("   "):
                names.update(re.split(r"[ ,]+", re.split(r"\s{2,}", line.strip())[0]))
    return {name.split("/")[0] for name in names if name and name != "..."}


def assert_listed(entries, listing, where):
    """Every entry of a model_dir matches a name of the listing (`*` a wildcard)."""
    missing = [e for e in entries if not any(fnmatch.fnmatch(e, n) for n in listing)]
    assert not missing, f"{where} does not list {missing}"


def test_training_and_evaluate_draw_a_two_value_code(tmp_path):
    """With --code_size 2 the run's end draws the projector's codes and evaluate all the test
    codes; a VAE's picture has the decoded grids over the prior and over the codes beside
    the scatter. Every command says which files it wrote, and every file that lands in
    model_dir (sample's and embeddings' default outputs too) is in the two listings of
    model_dir, docs/reliability.md's and model_dir.py's."""
    model_dir = tmp_path / "run"
    result = run_train("--model", "variational", "--code_size", "2", "--dataset",
                       "mnist_sample", "--epochs", "1", "--batch_size", "64",
                       "--embedding_images", "100", "--model_dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    assert f"Code space: {model_dir / 'latent_2d.png'}" in result.stdout
    import tensorflow as tf

    drawn = tf.io.decode_png((model_dir / "latent_2d.png").read_bytes()).numpy()
    assert drawn.shape == (600, 1750, 4)  # figsize (6.5 + 2 x 5.5, 6) at 100 dpi, RGBA
    assert len(np.unique(drawn.reshape(-1, 4), axis=0)) > 50  # points and decoded images
    before = (model_dir / "latent_2d.png").read_bytes()
    evaluated = run_python("-m", "tf_autoencoder", "evaluate", str(model_dir),
                           "--probe_samples", "200")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert report["latent_2d"] == str(model_dir / "latent_2d.png")
    assert (model_dir / "latent_2d.png").read_bytes() != before  # 500 test codes, not 100
    # The files written, then the count and rate of the images evaluated.
    assert evaluated.stdout.splitlines()[-3:-1] == [f"Wrote {model_dir / 'evaluation.json'}",
                                                    f"Wrote {model_dir / 'latent_2d.png'}"]
    sampled = run_python("-m", "tf_autoencoder", "sample", str(model_dir), "--n", "4")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.strip().endswith(str(model_dir / "samples.png"))
    shown = run_python("export_embeddings.py", "--model_dir", str(model_dir), "--what",
                       "reconstruction", "--images", "10", "--no_show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[0].endswith(str(model_dir / "reconstructions.png"))

    entries = os.listdir(model_dir)
    assert {".lock", "latent_2d.png", "samples.png", "reconstructions.png"} <= set(entries)
    with open(os.path.join(REPO, "docs", "reliability.md")) as f:
        assert_listed(entries, listed_names(f.read()), "docs/reliability.md")
    with open(os.path.join(REPO, "tf_autoencoder", "model_dir.py")) as f:
        assert_listed(entries, listed_names(f.read()), "model_dir.py's docstring")
