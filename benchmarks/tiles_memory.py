#!/usr/bin/env python
"""Memory and time of `predict --tiles` on photographs of growing size.

A model for 64x64 RGB images (the post's [16, 8, 8] filters, untrained weights: memory
and time do not depend on them) is exported as a SavedModel; scikit-image's astronaut
photograph, resized to each side (JPEG, quality 90), is scored by `tf-autoencoder predict
--tiles --no_reconstructions --csv`, one child process per image, whose peak resident
memory is collected (os.wait4); the same without --tiles (the image shrunk to 64x64)
is the baseline. The tiles are scored a bounded number at a time (serving/tiles.py), so
memory should grow with the image's pixels (decoding, the stitched map), not with the
number of tiles.

    python benchmarks/tiles_memory.py
    python benchmarks/tiles_memory.py --quick     # 256 and 512 pixels a side; printed only

Writes its section of benchmarks/RESULTS.md (between its markers; not with --quick).
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from train_speed import cpu_model, write_section  # noqa: E402

BEGIN, END = "<!-- tiles_memory:begin -->", "<!-- tiles_memory:end -->"
SHAPE = [64, 64, 3]


def export_model(work: str) -> str:
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.serving.export import export_saved_model

    config = Config(image_shape=SHAPE, precision="float32").validate()
    return export_saved_model(build_autoencoder(config), config, os.path.join(work, "export"))


def write_photo(path: str, side: int) -> None:
    import tensorflow as tf
    from skimage import data

    image = tf.image.resize(data.astronaut(), (side, side), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    with open(path, "wb") as f:
        f.write(tf.io.encode_jpeg(image, quality=90).numpy())


def run_predict(export: str, image: str, work: str, *extra: str) -> tuple[float, float, str]:
    """(peak resident MiB, seconds, the CSV row's notes) of one predict process."""
    csv_path = os.path.join(work, "scores.csv")
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "tf_autoencoder", "predict", export, image,
             "--no_reconstructions", "--csv", csv_path, *extra],
            stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            out.seek(0)
            raise SystemExit(f"predict failed on {image}:\n{out.read()}")
    import csv

    with open(csv_path, newline="") as f:
        (row,) = csv.DictReader(f)
    return usage.ru_maxrss / 1024, seconds, row["notes"]  # ru_maxrss: KiB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", default="1024,2048,4096",
                        help="the photographs' sides in pixels, comma-separated")
    parser.add_argument("--quick", action="store_true", help="256 and 512 a side; printed only")
    args = parser.parse_args(argv)
    sides = [256, 512] if args.quick else [int(s) for s in args.sides.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        export = export_model(work)
        for side in sides:
            image = os.path.join(work, f"astronaut_{side}.jpg")
            write_photo(image, side)
            for how, extra in (("resized to 64x64", ()), ("--tiles", ("--tiles",))):
                peak, seconds, notes = run_predict(export, image, work, *extra)
                rows.append((side, how, peak, seconds, notes))
                print(f"{side} x {side}, {how}: peak {peak:,.0f} MiB, {seconds:.1f} s ({notes})",
                      flush=True)
    lines = [
        "## `predict --tiles`: memory and time by image size", "",
        f"`python benchmarks/tiles_memory.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" on {datetime.date.today()}: {os.cpu_count()} x {cpu_model()}, shared with other "
        f"jobs; Python {platform.python_version()}. A model for 64x64 RGB images (filters "
        "16,8,8, untrained), its SavedModel; scikit-image's astronaut photograph resized to "
        "each side as a JPEG; one `predict --no_reconstructions --csv` process per row, "
        "its peak resident memory (start-up, TensorFlow and the model included) and wall "
        "time.", "",
        "| image | scored | peak memory (MiB) | seconds | notes |", "|---|---|---:|---:|---|"]
    lines += [f"| {side:,} x {side:,} | {how} | {peak:,.0f} | {seconds:.1f} | {notes} |"
              for side, how, peak, seconds, notes in rows]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        write_section(text, BEGIN, END)
        print("Wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
