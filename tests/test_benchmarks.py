"""Smoke runs of the benchmark scripts (tiny sizes, one step), so they keep working.
They assert that each script runs and reports sane numbers, never how fast anything is.
The training-speed benchmarks' are in test_benchmarks_speed.py."""
import os
import re

import pytest

from conftest import REPO, run_benchmark


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
