"""What training, predict, evaluate and embeddings say about how fast they go: each
epoch's line says images/s (run/progress.py), the other commands end with how many
images they went through and how fast (words.images_per_second)."""
import re

import numpy as np

from tf_autoencoder.words import images_per_second


class Clock:
    """A clock that moves 2 s every time it is read: the seconds a callback measures are
    then known from how often it reads the clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 2.0
        return self.now


def test_each_epoch_line_says_the_images_trained_per_second(capsys):
    """32 images in batches of 8, two epochs, each with validation; the clock moves 2 s
    between the epoch's start and its validation: 16 images/s. Catches a rate over the
    whole epoch (validation included: 8 images/s), one counting the steps of every epoch
    so far (32 images/s in the second), or the validation images among those trained."""
    import keras

    from tf_autoencoder.run.progress import EpochLine

    images = np.random.default_rng(0).random((32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(images, images, batch_size=8, epochs=2, validation_data=(images[:24], images[:24]),
              callbacks=[EpochLine(8, clock=Clock())], verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "images/s" in line]
    assert len(lines) == 2, lines
    for line in lines:
        assert re.fullmatch(r"4/4 - \d+s - \d+m?s/step - 16 images/s - loss: [\d.e-]+ "
                            r"- val_loss: [\d.e-]+", line), line


def test_images_per_second_says_the_count_and_the_rate():
    assert images_per_second(10_000, 2.5) == "10,000 images in 2.5 s, 4,000 images/s"
    assert images_per_second(1, 0.5) == "1 image in 0.5 s, 2 images/s"
