"""Pixel AUROC and PRO (run/localisation.py) on cases computed by hand."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tf_autoencoder.run.localisation import (MAX_FPR, localisation_metrics, per_image_auroc,
                                             pixel_auroc, pro_curve, pro_score, regions)


def two_half_covered_regions():
    """Two 4x4 images: a 2-pixel region in the first, a 4-pixel one in the second, each
    with half its pixels at 1.0; every other pixel 0."""
    masks = np.zeros((2, 4, 4), bool)
    maps = np.zeros((2, 4, 4))
    masks[0, 0, :2] = True
    maps[0, 0, 0] = 1.0
    masks[1, 3, :] = True
    maps[1, 3, :2] = 1.0
    return maps, masks


def test_pro_of_two_half_covered_regions_is_the_hand_computed_area():
    maps, masks = two_half_covered_regions()
    # Curve: (0, 0) -> (0, 0.5) at threshold 1 (both regions half covered, no false
    # positive) -> (1, 1) at threshold 0. At 0.3 it is 0.65: area 0.3 * (0.5 + 0.65) / 2.
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1])
    assert pro_score(maps, masks) == pytest.approx(0.3 * (0.5 + 0.65) / 2 / 0.3)


def test_pro_weighs_each_region_once_whatever_its_size():
    # A 12-pixel region found entirely and a 1-pixel one missed: PRO 0.5 at no false
    # positive, where the share of defect pixels found would be 12/13 (a pixel-weighted
    # overlap, the wrong implementation, gives that).
    masks = np.zeros((1, 8, 8), bool)
    maps = np.zeros((1, 8, 8))
    masks[0, :3, :4] = True
    maps[0, :3, :4] = 1.0
    masks[0, 7, 7] = True
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[1], pro[1]) == (0.0, 0.5)


def test_a_false_positive_moves_the_curve_right_by_one_negative_pixel():
    maps, masks = two_half_covered_regions()
    maps[0, 2, 2] = 0.5  # one of the 26 defect-free pixels above the rest
    negatives = 32 - 6
    start = 1 / negatives
    at_max = 0.5 + 0.5 * (MAX_FPR - start) / (1 - start)
    area = start * 0.5 + (MAX_FPR - start) * (0.5 + at_max) / 2
    assert pro_score(maps, masks) == pytest.approx(area / MAX_FPR)


def test_perfect_constant_and_random_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 32, 32), bool)
    for i in range(10):
        y, x = rng.integers(0, 24, 2)
        masks[i, y:y + 6, x:x + 8] = True
    perfect = masks.astype(float)
    assert pixel_auroc(perfect, masks) == 1.0
    assert pro_score(perfect, masks) == pytest.approx(1.0)
    # A constant map flags all pixels at once: the curve is the straight line to (1, 1).
    constant = np.zeros_like(perfect)
    assert pixel_auroc(constant, masks) == 0.5
    assert pro_score(constant, masks) == pytest.approx(MAX_FPR / 2)
    noise = rng.random(masks.shape)
    assert pixel_auroc(noise, masks) == pytest.approx(0.5, abs=0.03)
    assert pro_score(noise, masks) == pytest.approx(MAX_FPR / 2, abs=0.03)


def test_pixel_auroc_is_scikit_learns_over_every_pixel():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 5, 5)) < 0.2
    maps = rng.random((3, 5, 5)) + masks
    assert pixel_auroc(maps, masks) == roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, np.zeros_like(masks)) is None
    assert pro_score(maps, np.zeros_like(masks)) is None


def test_regions_are_eight_connected_and_numbered_across_images():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
    masks[0, 3, 3] = True
    masks[1, 0, 0] = True
    numbers = regions(masks)
    assert numbers[0, 0, 0] == numbers[0, 1, 1] == 1
    assert numbers[0, 3, 3] == 2 and numbers[1, 0, 0] == 3


def test_per_defect_metrics_pair_each_type_with_the_good_images():
    maps, masks = two_half_covered_regions()
    good = np.zeros((1, 4, 4))
    maps = np.concatenate([maps, good + 0.25])
    masks = np.concatenate([masks, good.astype(bool)])
    report = localisation_metrics(maps, masks, np.array([1, 2, 0]), ["good", "a", "b"])
    assert set(report["per_defect"]) == {"a", "b"}
    first = report["per_defect"]["a"]
    assert first["images"] == 1
    assert first["pixel_auroc"] == pixel_auroc(maps[[0, 2]], masks[[0, 2]])
    assert report["pro"] == pro_score(maps, masks)
    scores = per_image_auroc(maps, masks)
    assert np.isnan(scores[2]) and scores[0] == pixel_auroc(maps[0], masks[0])
