"""Smoke runs of the benchmark scripts (tiny sizes, one step), so they keep working.
They assert that each script runs and reports sane numbers, never how fast anything is."""
import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_benchmark(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_train_speed_runs_both_frameworks():
    pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    result = run_benchmark("benchmarks/train_speed.py", "--quick", "--settings", "NHWC float32")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "images/s" in line]
    assert lines[0].startswith("PyTorch ") and "reference" in lines[0]
    assert "tf-autoencoder NHWC float32" in lines[1]
    assert "input pipeline with noise" in lines[-1]


def test_torch_reference_has_the_posts_7873_weights():
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch==2.13.0 (CPU)")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from torch_reference import ConvAutoencoder

    model = ConvAutoencoder()
    assert sum(p.numel() for p in model.parameters()) == 7873
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_inference_speed_measures_the_export_and_keras():
    result = run_benchmark("benchmarks/inference_speed.py", "--quick")
    assert result.returncode == 0, result.stderr
    names = [line.split(":")[0] for line in result.stdout.splitlines() if "p50" in line]
    assert names == ["SavedModel `encode`", "SavedModel `serving_default`",
                     "Keras `model.encoder.predict`", "Keras `model.predict`"]


def test_profile_step_ranks_the_ops_of_a_training_step(tmp_path):
    result = run_benchmark("benchmarks/profile_step.py", "--quick", "--precision", "float32",
                           "--logdir", str(tmp_path / "profile"))
    assert result.returncode == 0, result.stderr
    assert "channels_last float32:" in result.stdout and "ms per step" in result.stdout
    by_type = result.stdout.split("by op type")[1].split("by op (")[0]
    assert "Conv2D" in by_type  # the model's convolutions were profiled
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))
