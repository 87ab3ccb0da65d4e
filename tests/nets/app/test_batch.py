"""Many images: serial, a local pool and a Dask cluster give the same files and the same confusion
matrix, and nothing is lost to an interruption, a killed worker or a corrupt image."""
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nets.app import batch, workers
from nets.app.evaluate import pair_files
from nets.app.files import image_files
from nets.app.imageio import write_label_png
from nets.deeplab import shapes_dataset

SETTINGS = batch.Settings("demo-largefov", crf="auto", backend="cpu")
N_IMAGES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A dozen held-out samples as PNG files, with their ground truth."""
    root = tmp_path_factory.mktemp("batch")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for n in range(N_IMAGES):
        image, labels = shapes_dataset.sample(n, "heldout")
        Image.fromarray(image).save(root / "images" / f"s{n:02d}.png")
        write_label_png(root / "labels" / f"s{n:02d}.png", labels)
    return root


@pytest.fixture(scope="module")
def serial(data, tmp_path_factory):
    """The reference: every output and the confusion matrix, in this process."""
    out = tmp_path_factory.mktemp("serial")
    summary = batch.segment_files(image_files([data / "images"]), SETTINGS, out, save_probs=True)
    assert summary.done == N_IMAGES and not summary.failures
    pairs, missing = pair_files(data / "labels", data / "images")
    assert not missing
    matrix, _ = batch.evaluate_files(pairs, SETTINGS, 6)
    assert matrix.sum() == N_IMAGES * 97 * 97
    return out, matrix


@pytest.fixture(scope="module")
def dask_client(require_oracle):
    require_oracle("distributed")
    with workers.local_cluster(2) as client:
        assert set(client.run(lambda: os.environ["MALLOC_TRIM_THRESHOLD_"]).values()) == {
            str(workers.DASK_MALLOC_TRIM_THRESHOLD)}
        yield client


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _same_outputs(folder, reference):
    """Label maps and reports bit for bit; probabilities within 1e-3: OpenBLAS's float32 GEMM
    sums in another order on 1 thread (a worker) than on 2 (the serial run) on some processors
    (an AMD Zen 5 host: up to 5e-5 apart on a 300x700 @ 700x500 product; groups of images change
    the products' shapes too): up to 1.5e-4 apart after the CRF in these probabilities."""
    got, want = _files(folder), _files(reference)
    assert sorted(got) == sorted(want)
    different = [name for name in want if not name.endswith(".npy") and got[name] != want[name]]
    assert not different, f"not bit-identical to the serial run: {different}"
    for name in (n for n in want if n.endswith(".npy")):
        np.testing.assert_allclose(np.load(folder / name, allow_pickle=False),
                                   np.load(reference / name, allow_pickle=False), rtol=0, atol=1e-3, err_msg=name)


def test_thread_budget_never_oversubscribes():
    assert [workers.thread_budget(n, 8) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            workers.thread_budget(bad, 8)


def test_local_pool_gives_the_serial_files_and_matrix(data, serial, tmp_path):
    reference, matrix = serial
    summary = batch.segment_files(image_files([data / "images"]), SETTINGS, tmp_path / "out", save_probs=True,
                                  workers=2)
    assert summary.done == N_IMAGES and "2 local processes x 1 thread" in summary.line()
    _same_outputs(tmp_path / "out", reference)
    pairs, _ = pair_files(data / "labels", data / "images")
    got, _ = batch.evaluate_files(pairs, SETTINGS, 6, workers=2)
    np.testing.assert_array_equal(got, matrix)


def test_dask_cluster_gives_the_serial_files_and_matrix(data, serial, dask_client, tmp_path):
    reference, matrix = serial
    summary = batch.segment_files(image_files([data / "images"]), SETTINGS, tmp_path / "out", save_probs=True,
                                  client=dask_client)
    assert summary.done == N_IMAGES and "Dask cluster of 2 workers" in summary.line()
    _same_outputs(tmp_path / "out", reference)
    pairs, _ = pair_files(data / "labels", data / "images")
    got, _ = batch.evaluate_files(pairs, SETTINGS, 6, client=dask_client)
    np.testing.assert_array_equal(got, matrix)


class _Interrupt(Exception):
    pass


def _interrupt_after(n):
    seen = []

    def on_outcome(outcome):
        seen.append(outcome)
        if len(seen) == n:
            raise _Interrupt
    return on_outcome


def test_an_interrupted_segment_resumes(data, serial, tmp_path):
    reference, _ = serial
    paths = image_files([data / "images"])
    with pytest.raises(_Interrupt):
        batch.segment_files(paths, SETTINGS, tmp_path / "out", save_probs=True, on_outcome=_interrupt_after(5))
    assert len(list((tmp_path / "out").glob("*.png"))) == 5
    # what a run killed while it wrote leaves: temporary files beside a finished and an unfinished output
    done, undone = sorted((tmp_path / "out").glob("*.png"))[0].stem, Path(paths[-1]).stem
    for orphan in (f".tmp-a1b2c3d4-{done}_probs.npy", f".tmp-e5f6g7h8-{undone}.png"):
        (tmp_path / "out" / orphan).write_bytes(b"half a file")
    (tmp_path / "out" / "notes.txt").write_bytes(b"the user's")
    summary = batch.segment_files(paths, SETTINGS, tmp_path / "out", save_probs=True, resume=True)
    assert summary.skipped == 5 and summary.ran == N_IMAGES - 5 and summary.done == N_IMAGES
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"the user's"
    (tmp_path / "out" / "notes.txt").unlink()
    _same_outputs(tmp_path / "out", reference)  # the temporary files are gone


def test_an_interrupted_evaluate_resumes_from_its_saved_matrices(data, serial, tmp_path):
    _, matrix = serial
    pairs, _ = pair_files(data / "labels", data / "images")
    with pytest.raises(_Interrupt):
        batch.evaluate_files(pairs, SETTINGS, 6, state_dir=tmp_path / "state", on_outcome=_interrupt_after(7))
    assert len(list((tmp_path / "state").glob("s*.npy"))) == 7
    orphan = tmp_path / "state" / f".tmp-q9w8e7r6-{Path(pairs[-1][0]).stem}.npy"  # a killed run's half file
    orphan.write_bytes(b"half a file")
    damaged = tmp_path / "state" / f"{Path(pairs[0][0]).stem}.npy"
    damaged.write_bytes(b"not a matrix")  # counted again, and written over
    got, summary = batch.evaluate_files(pairs, SETTINGS, 6, state_dir=tmp_path / "state", resume=True)
    assert sum(o.skipped for o in summary.outcomes) == 6 and not orphan.exists()
    assert not summary.outcomes[0].skipped and np.load(damaged).shape == (6, 6)
    np.testing.assert_array_equal(got, matrix)
    other = batch.Settings("demo-aspp", crf="auto", backend="cpu")
    with pytest.raises(ValueError, match=r"other settings \(model: 'demo-largefov' there, 'demo-aspp' now\)"):
        batch.evaluate_files(pairs, other, 6, state_dir=tmp_path / "state", resume=True)
    with pytest.raises(ValueError, match="--state"):
        batch.evaluate_files(pairs, SETTINGS, 6, resume=True)


def _kill_one(pids):
    """on_outcome that kills one of the worker processes (SIGKILL) when the first image is done."""
    killed = []

    def on_outcome(outcome):
        if not killed:
            victim = pids()[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    return on_outcome, killed


def test_a_killed_pool_worker_has_its_images_redone(data, serial, tmp_path):
    reference, _ = serial
    on_outcome, killed = _kill_one(lambda: [p.pid for p in multiprocessing.active_children()])
    summary = batch.segment_files(image_files([data / "images"]), SETTINGS, tmp_path / "out", save_probs=True,
                                  workers=2, on_outcome=on_outcome)
    assert killed and summary.done == N_IMAGES and not summary.failures
    _same_outputs(tmp_path / "out", reference)


def test_a_killed_dask_worker_has_its_images_redone(data, serial, dask_client, tmp_path):
    reference, matrix = serial
    on_outcome, killed = _kill_one(lambda: list(dask_client.run(os.getpid).values()))
    pairs, _ = pair_files(data / "labels", data / "images")
    got, summary = batch.evaluate_files(pairs, SETTINGS, 6, client=dask_client, on_outcome=on_outcome)
    assert killed and summary.done == N_IMAGES and not summary.failures
    np.testing.assert_array_equal(got, matrix)
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


@pytest.mark.parametrize("n_workers", [1, 2])
def test_a_corrupt_image_fails_alone(data, serial, tmp_path, n_workers):
    reference, _ = serial
    images = tmp_path / "images"
    images.mkdir()
    for p in (data / "images").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary = batch.segment_files(image_files([images]), SETTINGS, tmp_path / "out", save_probs=True,
                                  workers=n_workers)
    assert summary.done == N_IMAGES and [o.path for o in summary.failures] == [str(images / "broken.png")]
    assert "broken.png" in summary.failures[0].error
    _same_outputs(tmp_path / "out", reference)


@pytest.mark.parametrize("n_workers", [1, 2])
def test_groups_of_images_give_the_files_of_one_at_a_time(data, tmp_path, n_workers):
    images = tmp_path / "images"
    images.mkdir()
    for k, p in enumerate(sorted((data / "images").iterdir())[:7]):
        with Image.open(p) as image:
            (image.crop((0, 0, 97, 81)) if k in (2, 5) else image).save(images / p.name)  # two of another size
    (images / "s03b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # fails alone, inside a group
    paths = image_files([images])
    one = batch.segment_files(paths, SETTINGS, tmp_path / "one", save_probs=True, overlay=True)
    many = batch.segment_files(paths, SETTINGS, tmp_path / "many", save_probs=True, overlay=True, batch=3,
                               workers=n_workers)
    assert [o.path for o in many.outcomes] == [o.path for o in one.outcomes] == [str(p) for p in paths]
    assert [o.path for o in many.failures] == [str(images / "s03b.png")] and many.done == 7
    assert all("network" in o.timings and "write" in o.timings for o in many.outcomes if o.error is None)
    _same_outputs(tmp_path / "many", tmp_path / "one")
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        batch.segment_files(paths, SETTINGS, tmp_path / "bad", batch=0)


def _deeplab(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nets", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_workers_resume_and_summary(data, serial, tmp_path):
    reference, _ = serial
    proc = _deeplab("segment", data / "images", "--model", "demo-largefov", "--crf", "auto", "--backend", "cpu",
                    "--save-probs", "--workers", "2", "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{N_IMAGES} images (0 already done), 0 failed" in proc.stdout and "images/s" in proc.stdout
    assert "\r" not in proc.stderr  # no progress bar when standard error is not a terminal
    _same_outputs(tmp_path / "out", reference)
    grouped = _deeplab("segment", data / "images", "--model", "demo-largefov", "--crf", "auto", "--backend", "cpu",
                       "--save-probs", "--batch", "5", "-o", tmp_path / "grouped", cwd=tmp_path)
    assert grouped.returncode == 0, grouped.stderr
    _same_outputs(tmp_path / "grouped", reference)
    again = _deeplab("segment", data / "images", "--model", "demo-largefov", "--crf", "auto", "--save-probs",
                     "--resume", "-o", tmp_path / "out", cwd=tmp_path)
    assert again.returncode == 0 and f"({N_IMAGES} already done)" in again.stdout, again.stderr
    assert f"wrote 0 of {N_IMAGES} label maps to {tmp_path / 'out'} ({N_IMAGES} already there)" in again.stdout


def test_cli_evaluate_with_workers_and_state(data, serial, tmp_path):
    _, matrix = serial
    proc = _deeplab("evaluate", "--labels", data / "labels", "--images", data / "images", "--model",
                    "demo-largefov", "--crf", "auto", "--backend", "cpu", "--workers", "2", "--state",
                    tmp_path / "state", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{N_IMAGES} images, {matrix.sum()} pixels counted" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()[2:2 + 6]]
    np.testing.assert_array_equal(np.array(rows, np.int64), matrix)


@pytest.mark.parametrize("args, message", [
    (("--workers", "0"), "expected a positive integer, got 0"),
    (("--workers", "-2"), "expected a positive integer, got -2"),
    (("--workers", "two"), "expected a positive integer, got 'two'"),
    (("--workers", "2", "--scheduler", "tcp://127.0.0.1:9"), "not allowed with argument"),
])
def test_cli_refuses_bad_worker_counts(tmp_path, args, message):
    proc = _deeplab("segment", tmp_path, "--model", "demo-largefov", "-o", tmp_path / "out", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_cli_names_an_unreachable_scheduler(data, tmp_path):
    proc = _deeplab("segment", data / "images", "--model", "demo-largefov", "-o", tmp_path / "out",
                    "--scheduler", "tcp://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_on_a_dask_scheduler(data, serial, dask_client, tmp_path):
    """``--scheduler ADDRESS``, end to end: the shared-folder case (one machine shares its folders)."""
    reference, matrix = serial
    address = dask_client.scheduler.address
    proc = _deeplab("segment", data / "images", "--model", "demo-largefov", "--crf", "auto", "--backend", "cpu",
                    "--save-probs", "--scheduler", address, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Dask cluster of 2 workers" in proc.stdout and "MALLOC_TRIM_THRESHOLD_" not in proc.stderr
    _same_outputs(tmp_path / "out", reference)
    proc = _deeplab("evaluate", "--labels", data / "labels", "--images", data / "images", "--model",
                    "demo-largefov", "--crf", "auto", "--backend", "cpu", "--scheduler", address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[2:2 + 6]]
    np.testing.assert_array_equal(np.array(rows, np.int64), matrix)


def test_threads_per_worker_and_the_quiet_progress_bar(capsys):
    assert workers.describe_workers(2, threads=3) == "2 local processes x 3 threads"
    assert workers.describe_workers(2) == f"2 local processes x {workers.thread_budget(2)} thread" + (
        "s" if workers.thread_budget(2) > 1 else "")
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            workers.run(batch.segment_one, [], workers=2, threads=bad)
    progress = batch.Progress(3)  # standard output and error are captured here: no bar
    assert progress.bar is None
    progress.write("a line")
    progress.close()
    assert "a line" in capsys.readouterr().err


def test_a_batch_that_fails_is_run_one_image_at_a_time(data, tmp_path, monkeypatch):
    from nets.deeplab import Model
    real = Model.segment_batch

    def small_memory(self, images, *args, **kwargs):  # a device that holds one image at a time
        if len(images) > 1:
            raise MemoryError(f"{len(images)} images do not fit")
        return real(self, images, *args, **kwargs)

    paths = image_files([data / "images"])[:4]
    batch.segment_files(paths, SETTINGS, tmp_path / "one")
    monkeypatch.setattr(Model, "segment_batch", small_memory)
    many = batch.segment_files(paths, SETTINGS, tmp_path / "many", batch=4)
    assert many.done == 4 and not many.failures
    _same_outputs(tmp_path / "many", tmp_path / "one")
