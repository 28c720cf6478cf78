"""Scoring a large image in tiles (serving/tiles.py) with a score function the test
controls, so where each tile lands and how the map is stitched are checked exactly; on
real files through predict: tests/test_predict.py."""
import numpy as np
import pytest
from skimage import data

from tf_autoencoder.serving import tiles
from tf_autoencoder.serving.tiles import fits_in_tiles, score_in_tiles, tile_starts

SHAPE = (16, 12, 1)  # the model's (H, W, C): non-square, so rows and columns cannot swap


def identity_score(calls):
    """A stand-in for a model's score signature: a tile's map is its own pixels, its score
    their mean, anomalous above 0.5. Records each call's batch size in `calls`."""
    def score(batch):
        calls.append(len(batch))
        scores = batch.mean(axis=(1, 2, 3))
        return scores, scores > 0.5, batch[..., 0].copy()
    return score


def photo(height=45, width=50):
    """A crop of scikit-image's camera man, uint8 (h, w, 1)."""
    return data.camera()[100:100 + height, 200:200 + width, None]


def test_tiles_start_every_half_tile_and_the_last_is_flush_with_the_edge():
    assert tile_starts(45, 16) == [0, 8, 16, 24, 29]
    assert tile_starts(16, 16) == [0]
    assert tile_starts(17, 16) == [0, 1]
    assert not fits_in_tiles(16, 12, SHAPE)  # the model's own size: no tiles
    assert not fits_in_tiles(100, 11, SHAPE)  # narrower than the model: resized instead
    assert fits_in_tiles(17, 12, SHAPE)


def test_the_stitched_map_puts_every_tile_back_where_it_was_cut():
    """Tiles whose map is their own pixels stitch back into the image itself, at every
    pixel, overlaps averaged. Catches tiles placed at swapped or shifted corners, an
    uncovered border, and overlaps summed instead of averaged."""
    image = photo()
    calls = []
    tiled = score_in_tiles(image, SHAPE, identity_score(calls))
    assert tiled.anomaly_map.shape == (45, 50) and tiled.anomaly_map.dtype == np.float32
    np.testing.assert_allclose(tiled.anomaly_map, image[..., 0] / 255.0, atol=1e-6)
    assert tiled.tiles == len(tile_starts(45, 16)) * len(tile_starts(50, 12)) == sum(calls)
    assert tiled.reconstruction is None


def test_the_score_is_the_highest_tiles_and_so_is_the_verdict():
    """A bright 3x3 spot on a dark image: the image's score is the mean of a tile holding
    the spot, 9 / (16 * 12); a mean over the tiles would be several times lower, and
    the verdict follows that tile (here normal: 0.047 < 0.5)."""
    image = np.zeros((45, 50, 1), np.uint8)
    image[30:33, 40:43] = 255
    tiled = score_in_tiles(image, SHAPE, identity_score([]))
    assert tiled.score == pytest.approx(9 / (16 * 12))
    assert tiled.flagged is False
    image[:16, :12] = 255  # a tile above the threshold: the image is anomalous
    assert score_in_tiles(image, SHAPE, identity_score([])).flagged is True


def test_tiles_are_scored_a_bounded_number_at_a_time(monkeypatch):
    """With room for 3 tiles per call, no call gets more, every tile is scored once and
    the result is the one of a single call. Catches an image cut into all its tiles at
    once (memory grows with the image's tile count)."""
    image = photo()
    whole = score_in_tiles(image, SHAPE, identity_score([]))
    monkeypatch.setattr(tiles, "TILE_VALUES", 3 * 16 * 12)
    calls = []
    chunked = score_in_tiles(image, SHAPE, identity_score(calls), reconstruct=lambda t: t)
    assert max(calls) == 3 and sum(calls) == whole.tiles
    np.testing.assert_array_equal(chunked.anomaly_map, whole.anomaly_map)
    assert chunked.score == whole.score
    # reconstructions that are the tiles themselves stitch back into the image
    np.testing.assert_allclose(chunked.reconstruction, image / 255.0, atol=1e-6)
