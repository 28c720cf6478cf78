"""A smoke run of benchmarks/quality.py: the table, each variant's own settings, the claim."""
import re
import subprocess
import sys

from conftest import REPO


def test_quality_runs_tutorial_models_at_their_settings_and_judges_the_claim(tmp_path):
    out = tmp_path / "QUALITY.md"
    result = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--quick", "--variants",
         "conv,fc,tutorial_pooled", "--out", str(out), "--images_dir", str(tmp_path / "img")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    rows = {row[0]: row for row in re.findall(r"^\| (\w+) \| [^|]+ \| ([\d,]+) \| (\w+) \| (\d+) "
                                              r"\| (\d+) \|", text, re.M)}
    # name -> weights, loss, batch, epochs (--quick: 1 epoch each)
    assert rows["conv"][1:] == ("7,873", "bce", "256", "1")
    assert rows["fc"][1:] == ("222,384", "bce", "256", "1")
    assert rows["tutorial_pooled"][1:] == ("1,077", "mse", "20", "1")
    for name in rows:
        picture = tmp_path / "img" / "mnist_sample" / f"{name}.png"
        assert picture.read_bytes().startswith(b"\x89PNG")
    claim = re.search(r"\*\*The post's claim\.\*\* With 7,873 weights against 222,384 .*"
                      r"the claim (holds on every metric|holds on .*; not on .*)\.", text)
    assert claim, text
