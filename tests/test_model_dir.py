"""What a run leaves in its model_dir and who may write there: one run at a time (an OS
lock), ordinary file modes, synced atomic writes, reruns that change nothing, and
workers that must agree on where they resume."""
import os
import shutil

import pytest

from conftest import (REFERENCE_RUN, TRAINED_RUN, copy_run, error_lines, run_python, snapshot,
                      start_paused, start_workers, train_command, wait_all)


def test_a_second_run_or_an_export_on_a_training_model_dir_stops_and_writes_nothing(
        tmp_path, trained_run):
    """Catches: no lock (both runs train into one folder), a lock file that survives a
    SIGKILL (the rerun would be refused for ever), an export that does not look."""
    model_dir = copy_run(trained_run[0], tmp_path / "run")  # one epoch, batch 32: 125 steps
    train_args = ["--dataset", "mnist_sample", "--batch_size", "32", "--seed", "3",  # trained_run's
                  "--epochs", "2", "--model_dir", model_dir]
    first = start_paused(train_args, 130)  # in epoch 2
    try:
        before = snapshot(model_dir)
        second = run_python(*train_command(*train_args)[1:])
        assert second.returncode == 1, second.stderr
        [line] = error_lines(second.stderr)
        assert line.startswith("train.py: error: ") and model_dir in line
        assert f"in use by process {first.pid} (" in line and "train.py" in line
        export = run_python("-m", "tf_autoencoder", "export", model_dir)
        assert export.returncode == 1, export.stderr
        [line] = error_lines(export.stderr)
        assert f"{model_dir} is in use by process {first.pid}" in line and "exporting" in line
        assert snapshot(model_dir) == before
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.wait(timeout=60)
    rerun = run_python(*train_command(*train_args)[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert "Resuming from the end of epoch 1" in rerun.stdout
    assert sorted(os.listdir(os.path.join(model_dir, "export"))) == ["1", "2"]


def test_rerunning_a_finished_run_changes_no_export_or_result(tmp_path, trained_run):
    """Catches: a rerun that exports the same model again as export/2 (a model server
    would load it as a new version), or evaluates and rewrites the results."""
    model_dir = copy_run(trained_run[0], tmp_path / "run")
    kept = {name: snapshot(os.path.join(model_dir, name))
            for name in ("export", "model.keras", "test_metrics.json", "projector")}
    result = run_python("train.py", *TRAINED_RUN, "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    assert (f"{model_dir} already holds 1 epochs, exported as {model_dir}/export/1: nothing to "
            "train or export") in result.stdout
    for name, files in kept.items():
        assert snapshot(os.path.join(model_dir, name)) == files, name


def test_a_finished_run_whose_export_is_missing_exports_on_rerun(tmp_path, trained_run):
    """The end of a run that died before its export (here: export/ removed) is redone."""
    model_dir = copy_run(trained_run[0], tmp_path / "run")
    shutil.rmtree(os.path.join(model_dir, "export"))
    result = run_python("train.py", *TRAINED_RUN, "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    assert "nothing to train (raise --epochs" in result.stdout
    assert f"Exported {model_dir}/export/1" in result.stdout


def test_files_of_a_run_get_the_umask_mode_not_0600(trained_run):
    """Catches: atomic writes that keep mkstemp's 0600 (another user's TensorBoard cannot
    read config.json or the projector)."""
    model_dir = trained_run[0]
    umask = os.umask(0)
    os.umask(umask)  # this process's umask, which the run inherited
    expected = 0o666 & ~umask
    for name in ("config.json", "test_metrics.json", "history.csv", "model.keras",
                 "projector/metadata.tsv", "projector/projector_config.pbtxt",
                 "projector/sprite.png", "export/1/saved_model.pb"):
        mode = os.stat(os.path.join(model_dir, name)).st_mode & 0o777
        assert mode == expected, f"{name}: {oct(mode)}, not {oct(expected)}"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    """Catches a fixed mode (0600 or 0644) instead of the umask's."""
    path = tmp_path / "file.txt"
    code = (f"import os; os.umask({umask}); from tf_autoencoder.files import write_text_atomic; "
            f"write_text_atomic({str(path)!r}, 'text')")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert path.read_text() == "text"
    assert os.stat(path).st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["file.txt"]  # no temporary file left


def test_atomic_writes_sync_the_file_before_the_rename_and_the_folder_after(tmp_path,
                                                                           monkeypatch):
    """Catches a rename before the data is on disk (a power cut could leave an empty or
    partial file under the final name) and a rename that is not itself synced."""
    from tf_autoencoder import files

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "config.json"
    files.write_text_atomic(str(target), "{}\n")
    [(first, tmp), (second, renamed), (third, folder)] = events
    assert (first, second, third) == ("fsync", "replace", "fsync")
    assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(target)
    assert renamed == str(target) and folder == str(tmp_path)


def test_workers_that_restore_different_epochs_both_stop_with_one_line(tmp_path, reference_run):
    """Worker 1 does not see the chief's model_dir (as on a file system that is not
    shared): it would start at epoch 0 while the chief resumes at 3, and the two would
    wait on each other's collectives for ever. Both stop instead, with one line.
    (TensorFlow's own logging, which our flags cannot silence, may come before it.)"""
    chief_dir = copy_run(reference_run, tmp_path / "chief")  # 3 epochs
    processes = start_workers([chief_dir, str(tmp_path / "elsewhere")],
                              args=lambda index: [*REFERENCE_RUN[:-2], "--epochs", "4"])
    outputs = wait_all(processes)
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 1, stderr
        [line] = [line for line in error_lines(stderr) if line.startswith("train.py")]
        assert line.startswith("train.py: error: the workers see different newest checkpoints")
        assert "the chief: 186" in line and "shared file system" in line
    assert "this worker: 186" in outputs[0][1] and "this worker: 0" in outputs[1][1]
    assert not os.path.exists(os.path.join(chief_dir, "export", "2"))


def test_an_export_reads_the_run_without_writing_to_it_and_no_run_starts_meanwhile(
        tmp_path, trained_run):
    """Catches an export that writes into model_dir when its versions go elsewhere (a
    read-only or shared run folder, the suite's shared runs), and a run that starts
    while an export reads the model it is about to replace."""
    model_dir = copy_run(trained_run[0], tmp_path / "run")
    before = snapshot(model_dir)
    result = run_python("-m", "tf_autoencoder", "export", model_dir, "--export_dir",
                        str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert snapshot(model_dir) == before
    assert os.listdir(tmp_path / "elsewhere") == ["1"]

    from tf_autoencoder.files import ModelDirLock

    with ModelDirLock(model_dir, "exporting it", shared=True):  # what export holds
        second = run_python("train.py", "--dataset", "mnist_sample", "--batch_size", "32",
                            "--epochs", "2", "--model_dir", model_dir)
    assert second.returncode == 1, second.stderr
    [line] = error_lines(second.stderr)
    assert f"{model_dir} is in use by another process" in line
    assert snapshot(model_dir) == before
