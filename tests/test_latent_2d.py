"""latent_2d.png: a two-value code space drawn, with a VAE's decoded grid."""
import io
import json

import keras
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage

from conftest import run_python, run_train
from tf_autoencoder import Config, build_autoencoder
from tf_autoencoder.images import image_grid
from tf_autoencoder.run.latent_2d import GRID_SIDE, decoded_grid, grid_codes, latent_figure


def vae(data_format="channels_last", seed=0):
    keras.utils.set_random_seed(seed)
    return build_autoencoder(Config(model="variational", code_size=2, image_shape=[28, 28, 1],
                                    data_format=data_format, precision="float32").validate())


def test_the_grid_takes_equally_spaced_quantiles_of_the_prior_from_the_top_left():
    """Quantiles 0.05, 0.275, ..., 0.95 of N(0, 1), the middle 90% of the prior."""
    values, codes = grid_codes(5)
    np.testing.assert_allclose(values, [-1.6449, -0.5978, 0, 0.5978, 1.6449], atol=1e-4)
    np.testing.assert_allclose(codes[0], [values[0], values[-1]])  # top left: low x, high y
    np.testing.assert_allclose(codes[4], [values[-1], values[-1]])  # top right
    np.testing.assert_allclose(codes[-1], [values[-1], values[0]])  # bottom right


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_the_decoded_grid_is_the_decoders_images_of_the_grid_codes(data_format):
    model = vae(data_format)
    reference = vae("channels_last")
    reference.set_weights(model.get_weights())
    values, images = decoded_grid(model.decoder, data_format, side=4)
    assert images.shape == (4, 4, 28, 28, 1)
    _, codes = grid_codes(4)
    expected = keras.ops.convert_to_numpy(keras.ops.sigmoid(reference.decoder(codes)))
    np.testing.assert_allclose(images.reshape(16, 28, 28, 1), expected, atol=1e-5)


def test_the_figure_draws_every_code_in_its_labels_colour_and_the_grid():
    rng = np.random.default_rng(0)
    codes, labels = rng.normal(size=(300, 2)), rng.integers(0, 10, 300)
    grid = decoded_grid(vae().decoder, "channels_last", side=3)
    figure = latent_figure(codes, labels, grid)
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
    np.testing.assert_array_equal(image.get_array(), image_grid(list(grid[1]), pad=0)[..., 0])


def test_without_a_grid_the_figure_is_the_scatter_alone():
    codes, labels = np.zeros((4, 2)), np.array([3, 3, 7, 7])
    figure = latent_figure(codes, labels)
    assert len(figure.axes) == 1  # the scatter; its legend is not an axes
    assert [c.get_label() for c in figure.axes[0].collections] == ["3", "7"]


def test_training_and_evaluate_draw_a_two_value_code(tmp_path):
    """With --code_size 2 the run's end draws the projector's codes and evaluate all the test
    codes; a VAE's picture has the decoded grid beside the scatter (twice as wide)."""
    model_dir = tmp_path / "run"
    result = run_train("--model", "variational", "--code_size", "2", "--dataset",
                       "mnist_sample", "--epochs", "1", "--batch_size", "64",
                       "--embedding_images", "100", "--model_dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    assert f"Code space: {model_dir / 'latent_2d.png'}" in result.stdout
    import tensorflow as tf

    drawn = tf.io.decode_png((model_dir / "latent_2d.png").read_bytes()).numpy()
    assert drawn.shape == (600, 1200, 4)  # figsize (12, 6) at 100 dpi, RGBA
    assert len(np.unique(drawn.reshape(-1, 4), axis=0)) > 50  # points and decoded images
    before = (model_dir / "latent_2d.png").read_bytes()
    evaluated = run_python("-m", "tf_autoencoder", "evaluate", str(model_dir),
                           "--probe_samples", "200")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert report["latent_2d"] == str(model_dir / "latent_2d.png")
    assert (model_dir / "latent_2d.png").read_bytes() != before  # 500 test codes, not 100
