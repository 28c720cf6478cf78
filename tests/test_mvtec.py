"""The MVTec AD layout as a data source (data/mvtec.py): detection, the splits and the
masks it gives, its errors, and a train + evaluate run that reports localisation.

Real images: patches of scikit-image's brick texture with the synthetic defects of
benchmarks/maps.py, written in the layout by its own writer."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, error_lines, run_python, run_train
from tf_autoencoder.data import folder, mvtec, sources
from tf_autoencoder.errors import LayoutError

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import maps as benchmark  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A brick category: 80 training patches, 16 test patches, 8 of them defective (two
    of each of the benchmark's four defect types), as PNG files."""
    root = tmp_path_factory.mktemp("mvtec")
    benchmark.write_category(str(root), "brick", train_count=80, test_count=16, size=SIZE)
    return str(root / "brick")


def copy_of(category, tmp_path):
    destination = tmp_path / "brick"
    shutil.copytree(category, destination)
    return str(destination)


def test_the_layout_is_recognised_and_split_as_its_folders_say(category):
    assert mvtec.is_mvtec_layout(category)
    splits = sources.load_data(data_dir=category, log=lambda *a: None)
    assert splits.class_names == ["good", "blob", "scratch", "spots", "texture"]
    assert splits.normal_classes == [0]
    # Training and validation: train/good alone, shared by the folders' hash rule.
    trained = splits.train.images.paths + splits.validation.images.paths
    assert sorted(trained) == sorted(
        os.path.join(category, "train", "good", name)
        for name in os.listdir(os.path.join(category, "train", "good")))
    for path in splits.validation.images.paths:
        assert folder.split_of(os.path.relpath(path, os.path.join(category, "train"))) == "validation"
    assert len(splits.validation) > 0 and not splits.train.labels.any()
    # Test: every test image, labelled by its folder, its mask beside it in the same order.
    assert len(splits.test) == 16 and np.sum(splits.test.labels == 0) == 8
    for path, label, mask in zip(splits.test.images.paths, splits.test.labels, splits.masks):
        defect = splits.class_names[label]
        assert os.path.basename(os.path.dirname(path)) == defect
        if defect == "good":
            assert mask is None
        else:
            stem = os.path.splitext(os.path.basename(path))[0]
            assert mask == os.path.join(category, "ground_truth", defect, f"{stem}_mask.png")


def test_masks_are_prepared_as_their_images_are(category):
    """The same crop for mask and image: at 32x16 from 32x32, both are the centre
    columns 8..23 (no resize), so each mask still marks where its image changed."""
    splits = sources.load_data(data_dir=category, image_size=(SIZE, SIZE // 2),
                               log=lambda *a: None)
    masks = mvtec.read_masks(splits.masks, splits.image_shape)
    images = splits.test.images[:]
    for i, (path, mask_file) in enumerate(zip(splits.test.images.paths, splits.masks)):
        original = np.asarray(Image.open(path))
        np.testing.assert_array_equal(images[i, ..., 0], original[:, 8:24])
        expected = np.zeros((SIZE, SIZE), bool) if mask_file is None else \
            np.asarray(Image.open(mask_file)) > 127
        np.testing.assert_array_equal(masks[i], expected[:, 8:24])
    assert masks.any()
    # Resized: binarised after resizing, so a mask stays a mask at any size.
    small = mvtec.read_masks(splits.masks, (SIZE // 2, SIZE // 2, 1))
    assert small.dtype == bool and small.shape == (16, SIZE // 2, SIZE // 2) and small.any()


def test_the_plain_train_test_layout_is_not_taken_for_it(tmp_path, category):
    plain = tmp_path / "plain"
    for split in ("train", "test"):
        shutil.copytree(os.path.join(category, split, "good"), plain / split / "good")
    assert not mvtec.is_mvtec_layout(str(plain))
    assert sources.load_data(data_dir=str(plain), log=lambda *a: None).masks is None


def test_a_mask_of_another_size_is_one_line_exit_2(category, tmp_path):
    root = copy_of(category, tmp_path)
    mask = os.path.join(root, "ground_truth", "scratch", "0000_mask.png")
    Image.fromarray(np.zeros((SIZE, SIZE + 4), np.uint8)).save(mask)
    with pytest.raises(LayoutError, match=f"{mask} is {SIZE}x{SIZE + 4} but its image .* is "
                                          f"{SIZE}x{SIZE} .*a mask must be the size of its image"):
        sources.load_data(data_dir=root, log=lambda *a: None)
    result = run_train("--data_dir", root, "--model_dir", str(tmp_path / "run"), "--epochs", "1")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "must be the size of its image" in lines[0]
    assert not os.path.exists(tmp_path / "run" / "config.json")


def test_a_defect_folder_without_masks_is_one_line(category, tmp_path):
    root = copy_of(category, tmp_path)
    shutil.rmtree(os.path.join(root, "ground_truth", "blob"))
    with pytest.raises(LayoutError, match=r"test/blob holds 2 defective images but "
                                          r".*ground_truth/blob holds no masks: add"):
        sources.load_data(data_dir=root, log=lambda *a: None)
    os.remove(os.path.join(root, "ground_truth", "spots", "0001_mask.png"))
    shutil.rmtree(os.path.join(root, "test", "blob"))
    with pytest.raises(LayoutError, match=r"spots/0001.png has no mask: expected .*"
                                          r"ground_truth/spots/0001_mask.png"):
        sources.load_data(data_dir=root, log=lambda *a: None)


def test_train_and_evaluate_report_localisation_per_defect(category, tmp_path):
    """One run on the layout, the end-to-end path (two commands, each starting
    TensorFlow: about a minute on two shared cores, the reason it is one test). The
    report's pixel AUROC is recomputed here from the files themselves (each image and its
    mask read by PIL, the model's own maps), so masks that do not follow their images
    fail it, and it must beat the same maps scored against masks shuffled among the
    defective images (what a misaligned reader would score) and a constant map (0.5)."""
    import keras
    from sklearn.metrics import roc_auc_score

    from tf_autoencoder.model.maps import anomaly_map
    from tf_autoencoder.run.localisation import pixel_auroc
    from tf_autoencoder.serving.loading import load_finished_model

    model_dir = str(tmp_path / "run")
    result = run_train("--data_dir", category, "--model_dir", model_dir, "--epochs", "10",
                       "--seed", "0", "--embedding_images", "0")
    assert result.returncode == 0, result.stderr
    result = run_python("-m", "tf_autoencoder.evaluate", model_dir)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        report = json.load(f)
    where = report["localisation"]
    defects = ["blob", "scratch", "spots", "texture"]
    assert list(where["per_defect"]) == defects and where["map"] == "l2" and where["sigma"] == 4
    for name in defects:
        values = where["per_defect"][name]
        assert values["images"] == 2
        assert values["image_auroc"] == report["anomaly"]["auroc_per_anomalous_class"][name]
        assert f"{name}: image / pixel AUROC, PRO (2 images)" in result.stdout
    assert where["image_auroc"] == report["anomaly"]["auroc"]

    model = load_finished_model(model_dir)
    images, masks, labels = [], [], []
    for label, name in enumerate(["good"] + defects):
        for file in sorted(os.listdir(os.path.join(category, "test", name))):
            images.append(np.asarray(Image.open(os.path.join(category, "test", name, file))))
            mask = os.path.join(category, "ground_truth", name, file[:-4] + "_mask.png")
            masks.append(np.asarray(Image.open(mask)) > 127 if label else
                         np.zeros((SIZE, SIZE), bool))
            labels.append(label)
    pixels = np.array(images, np.float32)[..., None] / 255
    maps = keras.ops.convert_to_numpy(anomaly_map(
        pixels, keras.ops.sigmoid(model(pixels, training=False)), "l2", 4.0))
    masks, labels = np.array(masks), np.array(labels)
    assert where["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()),
                                                 abs=1e-4)
    defective = np.flatnonzero(labels > 0)
    shuffled = masks.copy()
    shuffled[defective] = masks[np.roll(defective, 1)]
    assert where["pixel_auroc"] > pixel_auroc(maps, shuffled)
    assert where["pixel_auroc"] > pixel_auroc(np.zeros_like(maps), masks) == 0.5
    # Other maps for the same run, asked for: evaluate scores those.
    result = run_python("-m", "tf_autoencoder.evaluate", model_dir, "--map", "ssim",
                        "--map_sigma", "2")
    assert result.returncode == 0, result.stderr
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        other = json.load(f)["localisation"]
    ssim_maps = keras.ops.convert_to_numpy(anomaly_map(
        pixels, keras.ops.sigmoid(model(pixels, training=False)), "ssim", 2.0))
    assert (other["map"], other["sigma"]) == ("ssim", 2)
    assert other["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks.ravel(), ssim_maps.ravel()), abs=1e-4)
    assert "pixel AUROC (ssim maps, sigma 2)" in result.stdout
    # The picture: six columns of the defective images, three rows (image, mask, map).
    assert where["figure"] == os.path.join(model_dir, "localisation_worst.png")
    picture = np.asarray(Image.open(where["figure"]).convert("L"))
    assert picture.shape[1] > picture.shape[0] and picture.std() > 10
    assert f"Wrote {where['figure']}" in result.stdout


def test_skipping_a_damaged_test_image_drops_its_mask_too(category, tmp_path):
    """--skip_bad_images on the layout: a defective test image whose header reads but
    whose pixels do not is dropped with its mask, so the masks still follow their
    images (a mask list left whole would shift every later mask by one)."""
    root = copy_of(category, tmp_path)
    damaged = os.path.join(root, "test", "blob", "0000.png")
    with open(damaged, "rb") as f:
        data = f.read()
    with open(damaged, "wb") as f:
        f.write(data[:60])  # the header and the start of the pixels
    splits = sources.load_data(data_dir=root, skip_bad_images=True, log=lambda *a: None)
    splits = folder.drop_bad_files(splits, log=lambda *a: None)
    assert damaged not in splits.test.images.paths and len(splits.masks) == len(splits.test) == 15
    for path, mask in zip(splits.test.images.paths, splits.masks):
        if mask is not None:
            stem = os.path.splitext(os.path.basename(path))[0]
            assert os.path.basename(mask) == f"{stem}_mask.png"
            assert os.path.basename(os.path.dirname(mask)) == os.path.basename(os.path.dirname(path))
