"""anomaly_map against NumPy/scipy/scikit-image references (conftest's
reference_anomaly_maps), on photographs scikit-image ships; and a defect pasted into a
photograph is where its map peaks."""
import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from conftest import reference_anomaly_maps
from tf_autoencoder.model.maps import anomaly_map


def photo_and_blurred(height=48, width=64, colour=True):
    """A crop of the astronaut photograph (non-square, so rows and columns cannot swap
    unnoticed) and a blurred copy standing in for an autoencoder's soft reconstruction."""
    image = data.astronaut()[100:100 + height, 180:180 + width].astype(np.float32) / 255.0
    if not colour:
        image = image.mean(axis=-1, keepdims=True)
    blurred = ndimage.gaussian_filter(image, sigma=(1.2, 1.2, 0))
    return image[None], blurred[None].astype(np.float32)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 4.0])
def test_l2_map_is_the_channel_mean_squared_error_smoothed_as_scipy(sigma):
    """Catches a sum instead of a mean over channels, a kernel cut at another width, zero or
    mirror padding at the edges, and rows swapped with columns."""
    image, reconstruction = photo_and_blurred()
    got = np.asarray(anomaly_map(image, reconstruction, kind="l2", sigma=sigma))
    assert got.shape == (1, 48, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_anomaly_maps(image, reconstruction, "l2", sigma),
                               rtol=1e-4, atol=1e-7)


def test_smoothing_wider_than_the_image_still_matches_scipy():
    """An 8x8 map under sigma 4 (a 33-tap kernel): the padding reflects more than once.
    Catches tf.pad-style mirror padding, which refuses or wraps wrongly past the edge."""
    image, reconstruction = photo_and_blurred(8, 8)
    got = np.asarray(anomaly_map(image, reconstruction, kind="l2", sigma=4.0))
    np.testing.assert_allclose(got, reference_anomaly_maps(image, reconstruction, "l2", 4.0),
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("colour", [True, False])
def test_ssim_map_is_one_minus_skimage_ssim(colour):
    """Catches other constants, a box window, sample covariance (off by 1e-3 here), SSIM
    on the channel mean of a colour image, and padding other than scikit-image's. The
    tolerance is float32's against float64's."""
    image, reconstruction = photo_and_blurred(colour=colour)
    for sigma in (0.0, 4.0):
        got = np.asarray(anomaly_map(image, reconstruction, kind="ssim", sigma=sigma))
        np.testing.assert_allclose(
            got, reference_anomaly_maps(image, reconstruction, "ssim", sigma), atol=1e-4)


def test_ssim_of_a_colour_defect_of_equal_brightness_is_seen():
    """Swapping red and green in a patch keeps the channel mean: a map on the channel mean
    would miss it, the per-channel map must peak there."""
    image, _ = photo_and_blurred()
    changed = image.copy()
    changed[0, 10:20, 40:50, :2] = changed[0, 10:20, 40:50, 1::-1]
    got = np.asarray(anomaly_map(changed, image, kind="ssim", sigma=0))[0]
    row, column = np.unravel_index(np.argmax(got), got.shape)
    assert 10 - 5 <= row < 20 + 5 and 40 - 5 <= column < 50 + 5
    assert got.max() > 10 * np.median(got)


@pytest.mark.parametrize("kind", ["l2", "ssim"])
def test_a_pasted_defect_is_where_the_map_peaks(kind):
    """A 6x6 patch of another photograph (the camera man) pasted at rows 30-35, columns
    8-13 of the astronaut crop; the reconstruction is the clean crop blurred, as a model of
    normal images would give. The smoothed map's maximum lies on the defect. Catches a map
    transposed (the defect is off the diagonal), shifted by the padding, or a smoothing
    that spreads the peak to the image's busy texture."""
    image, reconstruction = photo_and_blurred()
    defective = image.copy()
    patch = data.camera()[200:206, 200:206].astype(np.float32) / 255.0
    defective[0, 30:36, 8:14, :] = patch[..., None]
    got = np.asarray(anomaly_map(defective, reconstruction, kind=kind, sigma=4.0))[0]
    row, column = np.unravel_index(np.argmax(got), got.shape)
    assert 30 <= row < 36 and 8 <= column < 14, (row, column)
    # and the defect made it: the clean image's map is lower at that place
    clean = np.asarray(anomaly_map(image, reconstruction, kind=kind, sigma=4.0))[0]
    assert got[row, column] > 2 * clean[row, column]


def test_unknown_kind_and_negative_sigma_are_refused():
    image, reconstruction = photo_and_blurred(8, 8)
    with pytest.raises(ValueError, match="unknown anomaly map kind 'l1'"):
        anomaly_map(image, reconstruction, kind="l1")
    with pytest.raises(ValueError, match="sigma"):
        anomaly_map(image, reconstruction, sigma=-1.0)
