"""Hostile and careless input around files: where `eval`, `show` and `export` write, exported files
given in place of runs, paths that are something else than a run, memory while loading images,
environment variables, names with control characters, and a `config.yaml` edited before `--resume`.

Every refusal is one sentence on stderr with exit status 2, and nothing is left half-written. One
tiny image run (8×8 px, 2 steps) serves the module; tests that damage a run work on a copy.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

import relpos
from relpos.checkpoint import atomic_torch_save, checkpoint_path, load_checkpoint
from relpos.cli import main
from relpos.errors import ConfigError, DataError, RelposError, printable

IMAGE_SETTINGS = ["modality.image_size=8", "modality.patch_size=4"]
#: The module (``relpos.evaluation.evaluate`` as an attribute is the function of the same name).
EVALUATE = importlib.import_module("relpos.evaluation.evaluate")


@pytest.fixture(scope="module")
def shades(tmp_path_factory) -> Path:
    """24 training and 12 test 8×8 images: class 'dark' near 0, class 'bright' near 255."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.tile([0, 1], n // 2)
        x = np.where(y[:, None, None] == 1, 200, 30) + rng.integers(0, 40, size=(n, 8, 8))
        return x.astype(np.uint8), y.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = images(24), images(12)
    path = tmp_path_factory.mktemp("hostile-data") / "shades.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["dark", "bright"]))
    return path


def _tiny_image_args(data: Path, out: Path, steps: int = 2) -> list[str]:
    args = ["train", "--modality", "image", "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--no-progress"]
    for override in [*TINY_OVERRIDES, *IMAGE_SETTINGS, "train.log_every=1", "train.tensorboard=false"]:
        args += ["--set", override]
    return args


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, shades) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("hostile-run") / "run"
        assert main(_tiny_image_args(shades, out)) == 0
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def run_copy(image_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(image_run, copy)
    return copy


@pytest.fixture
def exported(image_run, tmp_path) -> Path:
    path = tmp_path / "encoder.safetensors"
    assert main(["export", str(image_run), "--out", str(path)]) == 0
    return path


def one_sentence(capsys, args) -> str:
    """Run ``relpos ARGS``; assert exit 2 and exactly one ``relpos: error:`` line; return it."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("relpos: warning:")]
    assert len(lines) == 1 and lines[0].startswith("relpos: error: ") and "Traceback" not in err, err
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- writing where it cannot ------------------------------------------------------------------------
def test_eval_into_a_file_where_its_folder_goes_is_refused_before_the_data_is_read(run_copy, capsys, monkeypatch):
    (run_copy / "eval").write_text("in the way\n")

    def never(*args, **kwargs):
        raise AssertionError("the data was opened before the outputs were checked")

    monkeypatch.setattr(EVALUATE, "_open", never)
    line = one_sentence(capsys, ["eval", run_copy, "--no-progress"])
    assert f"Cannot write the evaluation results into '{run_copy / 'eval'}': it is a file, not a folder" in line
    assert "eval.write=false" in line
    assert (run_copy / "eval").read_text() == "in the way\n"


def test_eval_with_a_folder_in_place_of_results_csv_writes_nothing(run_copy, capsys):
    (run_copy / "eval" / "results.csv").mkdir(parents=True)
    line = one_sentence(capsys, ["eval", run_copy, "--no-progress"])
    assert f"'{run_copy / 'eval' / 'results.csv'}': it is a folder, not a file" in line
    assert _files(run_copy / "eval") == ["results.csv"]


def test_eval_into_a_read_only_run_is_refused_before_the_work(run_copy, capsys, monkeypatch):
    # As root chmod does not stop writes, so the permission check itself is made to fail.
    real_access = os.access
    monkeypatch.setattr("relpos.paths.os.access",
                        lambda path, mode: False if Path(path) == run_copy else real_access(path, mode))
    monkeypatch.setattr(EVALUATE, "_open", lambda *a, **k: pytest.fail("data was read"))
    line = one_sentence(capsys, ["eval", run_copy, "--no-progress"])
    assert f"'{run_copy}' is not writable (permission denied)" in line
    assert not (run_copy / "eval").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_eval_into_a_really_read_only_run(run_copy, capsys):
    run_copy.chmod(0o555)
    try:
        line = one_sentence(capsys, ["eval", run_copy, "--no-progress"])
    finally:
        run_copy.chmod(0o755)
    assert "is not writable (permission denied)" in line


def test_eval_write_failure_after_the_work_is_one_sentence(run_copy, capsys, monkeypatch):
    def refuse(text, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(EVALUATE, "atomic_write_text", refuse)
    line = one_sentence(capsys, ["eval", run_copy, "--no-progress"])
    assert f"Cannot write the evaluation results to '{run_copy / 'eval' / 'linear-pretrained-cls.json'}': " \
           f"Permission denied" in line
    assert not (run_copy / "eval" / "results.csv").exists()


def test_show_into_a_file_where_plots_goes_draws_nothing(run_copy, capsys):
    shutil.rmtree(run_copy / "plots")
    (run_copy / "plots").write_text("in the way\n")
    line = one_sentence(capsys, ["show", run_copy])
    assert f"Cannot write the pictures into '{run_copy / 'plots'}': it is a file, not a folder" in line
    assert (run_copy / "plots").read_text() == "in the way\n"


def test_show_with_a_folder_in_place_of_one_picture_draws_nothing(run_copy, tmp_path, capsys):
    out = tmp_path / "pictures"
    (out / "attention.png").mkdir(parents=True)
    line = one_sentence(capsys, ["show", run_copy, "--out", out])
    assert f"'{out / 'attention.png'}': it is a folder, not a file" in line
    assert _files(out) == ["attention.png"]  # loss.png, drawn first before, is not written either


def test_show_reads_a_non_utf8_metrics_csv_as_one_sentence(run_copy, capsys):
    (run_copy / "metrics.csv").write_bytes(b"step,loss\n1,\xff\xfe2.0\n")
    plot = (run_copy / "plots" / "loss.png").read_bytes()  # drawn by training
    line = one_sentence(capsys, ["show", run_copy, "loss"])
    assert "The training log" in line and "is not UTF-8 text (byte b'\\xff' at offset 12)" in line
    assert (run_copy / "plots" / "loss.png").read_bytes() == plot


def test_export_with_a_file_in_place_of_the_export_folder(run_copy, capsys):
    (run_copy / "export").write_text("in the way\n")
    line = one_sentence(capsys, ["export", run_copy])
    assert f"Cannot write the exported encoder into '{run_copy / 'export'}': it is a file, not a folder" in line
    assert (run_copy / "export").read_text() == "in the way\n"


def test_export_write_failure_leaves_no_file(image_run, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    def fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    line = one_sentence(capsys, ["export", image_run, "--out", tmp_path / "enc.safetensors"])
    assert f"Cannot write the exported encoder to '{tmp_path / 'enc.safetensors'}': Error while serializing" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_export_honours_the_umask(image_run, tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        assert main(["export", str(image_run), "--out", str(tmp_path / "enc.safetensors")]) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "enc.safetensors").stat().st_mode & 0o777 == mode


# -- exported files in place of runs ------------------------------------------------------------------
def test_eval_of_an_exported_file_writes_beside_it(exported, shades, capsys):
    capsys.readouterr()
    assert main(["eval", str(exported), "--no-progress"]) == 0
    folder = exported.parent / "encoder-eval"
    card = next(folder.glob("linear-shades-*.json")).name  # the evaluation card, with random init beside it
    assert _files(folder) == sorted(["linear-pretrained-cls.json", "linear-random-cls.json", card,
                                     card.replace(".json", ".md"), "results.csv"])
    assert json.loads((folder / "linear-pretrained-cls.json").read_text())["run_dir"] == str(exported)
    # with --data too: the export's metadata says what the encoder was trained on
    assert main(["eval", str(exported), "--data", str(shades), "--protocol", "knn", "--no-progress"]) == 0
    assert (folder / "knn-pretrained-cls.json").is_file()


def test_show_and_export_name_an_exported_file(exported, capsys):
    for command in ("show", "export"):
        line = one_sentence(capsys, [command, exported])
        assert f"'{exported}' is an exported encoder (a .safetensors file written by `relpos export`), " \
               f"not a run directory" in line


def _rewrite(path: Path, tensors=None, **meta_changes) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata())
    meta = json.loads(metadata["relpos"])
    meta.update(meta_changes)
    metadata["relpos"] = json.dumps(meta)
    save_file(tensors if tensors is not None else load_file(str(path)), str(path), metadata=metadata)


@pytest.mark.parametrize("change, expected", [
    ({"step": "abc"}, "describes its training step as 'abc'"),
    ({"step": -1}, "describes its training step as -1"),
    ({"data_info": [1, 2]}, "('data_info') that is a list ([1, 2]), expected a mapping"),
])
def test_export_metadata_is_read_with_a_guard(exported, change, expected):
    _rewrite(exported, **change)
    with pytest.raises(RelposError, match=None) as info:
        relpos.load_encoder(exported)
    assert expected in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_weights_of_another_kind_are_not_cast_silently(exported, dtype):
    from safetensors.torch import load_file

    tensors = load_file(str(exported))
    tensors["patch_embed.weight"] = tensors["patch_embed.weight"].to(dtype)
    _rewrite(exported, tensors)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(RelposError, match=rf"weight 'patch_embed.weight' as {name} values, but the encoder's are float32"):
        relpos.load_encoder(exported)


def test_nan_weights_are_refused(exported, run_copy):
    from safetensors.torch import load_file

    tensors = load_file(str(exported))
    weight = tensors["patch_embed.weight"]
    tensors["patch_embed.weight"] = torch.full_like(weight, float("nan"))
    _rewrite(exported, tensors)
    with pytest.raises(RelposError, match=rf"holds {weight.numel()} NaN or infinite values in the encoder weight "
                                          rf"'patch_embed.weight' \({weight.numel()} values\)"):
        relpos.load_encoder(exported)
    # the same in a run's checkpoint: one infinite value
    ckpt = checkpoint_path(run_copy)
    state = load_checkpoint(ckpt, resume=True)
    state["model"]["encoder.cls_token"].view(-1)[0] = float("inf")
    atomic_torch_save(state, ckpt)
    with pytest.raises(RelposError, match="holds 1 NaN or infinite value in the encoder weight 'cls_token'"):
        relpos.load_encoder(run_copy)


def test_export_refuses_a_checkpoint_whose_encoder_cannot_be_built(run_copy, capsys):
    ckpt = checkpoint_path(run_copy)
    state = load_checkpoint(ckpt, resume=True)
    state["encoder"]["patch_shape"] = [-4, 4]
    atomic_torch_save(state, ckpt)
    line = one_sentence(capsys, ["export", run_copy])
    assert f"Cannot export: checkpoint '{ckpt}' describes an encoder that cannot be built" in line
    assert "its export would not load" in line
    assert not (run_copy / "export").exists()


# -- paths that are something else than a run ------------------------------------------------------------
def _make(kind: str, tmp_path: Path, image_run: Path) -> tuple[Path, str]:
    path = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(path)
        return path, f"'{path}' is a named pipe (FIFO), not a run directory"
    if kind == "loop":
        path.symlink_to(path)
        return path, f"'{path}' is a symbolic link that loops back on itself, not a run directory"
    if kind == "dangling":
        path.symlink_to(tmp_path / "gone")
        return path, f"'{path}' is a symbolic link to '{tmp_path / 'gone'}', which does not exist, not a run directory"
    if kind == "file":
        path.write_text("notes\n")
        return path, f"'{path}' is a file, not a run directory, and not a checkpoint either"
    if kind == "folder":
        path.mkdir()
        return path, f"Folder '{path}' has no checkpoint ('{path / 'checkpoints' / 'last.pt'}' does not exist)"
    if kind == "last.pt-folder":
        shutil.copytree(image_run, path)
        ckpt = checkpoint_path(path)
        ckpt.unlink()
        ckpt.mkdir()
        return path, f"The checkpoint '{ckpt}' of run '{path}' is a folder, not a file"
    return path, f"Run directory '{path}' does not exist"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
@pytest.mark.parametrize("kind", ["fifo", "loop", "dangling", "file", "folder", "last.pt-folder", "missing"])
@pytest.mark.parametrize("command", ["eval", "show", "export", "resume"])
def test_a_path_that_is_not_a_run_is_named_for_what_it_is(kind, command, tmp_path, image_run, capsys):
    path, expected = _make(kind, tmp_path, image_run)
    before = _files(tmp_path)
    args = ["train", "--out", path, "--resume", "--steps", "3"] if command == "resume" else [command, path]
    line = one_sentence(capsys, args)
    if command == "resume":
        expected = "Cannot resume: " + expected[0].lower() + expected[1:]
    assert expected in line
    assert "missing" not in line.replace(str(tmp_path), "")
    assert _files(tmp_path) == before


# -- messages that misname the problem ------------------------------------------------------------------
def test_eval_data_of_another_modality_gives_the_reason_first(image_run, tmp_path, capsys):
    other = tmp_path / "signals.csv"
    other.write_text("1,2,3\n")
    line = one_sentence(capsys, ["eval", image_run, "--data", other, "--no-progress"])
    assert line.startswith(f"relpos: error: --data '{other}' cannot be opened with the run's modality 'image': "
                           f"Cannot open '{other}' as images")
    assert "another modality?" not in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_eval_device_is_named_as_the_eval_setting(image_run, capsys):
    line = one_sentence(capsys, ["eval", image_run, "--set", "eval.device=cuda", "--no-progress"])
    assert "'eval.device' is 'cuda' but no CUDA GPU is available" in line
    assert "train.device" not in line


@pytest.mark.parametrize("name", ["RANK", "WORLD_SIZE", "LOCAL_RANK"])
def test_a_distributed_variable_the_user_set_is_named(name, monkeypatch):
    from relpos.distributed import launch_from_env

    monkeypatch.setenv(name, "two")
    with pytest.raises(ConfigError) as info:
        launch_from_env()
    assert str(info.value).startswith(f"The environment variable {name} is 'two', expected a whole number")
    assert "(torchrun sets it)" not in str(info.value)


def test_ranks_that_do_not_fit_together_name_the_variables(monkeypatch):
    from relpos.distributed import launch_from_env

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"The environment variables RANK, WORLD_SIZE, LOCAL_RANK and "
                                          r"LOCAL_WORLD_SIZE do not fit together \(RANK=3, WORLD_SIZE=2"):
        launch_from_env()


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_cache_mmap_variable_is_named_with_its_value(value, monkeypatch, capsys):
    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", value)
    line = one_sentence(capsys, ["data", "inspect", "--modality", "eeg"])
    assert f"The environment variable RELPOS_CACHE_MMAP_MIN_BYTES is '{value}', expected a whole number of " \
           f"bytes >= 0" in line
    assert "read back" not in line


def test_mmap_variable_values_that_are_allowed(monkeypatch):
    from relpos.cache import mmap_min_bytes

    monkeypatch.delenv("RELPOS_CACHE_MMAP_MIN_BYTES", raising=False)
    assert mmap_min_bytes() == 2**30
    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", " 0 ")
    assert mmap_min_bytes() == 0


@pytest.fixture(scope="module")
def series_run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("hostile-ts")
    np.savez(folder / "cases.npz", X=rng.standard_normal((12, 2, 40)).astype(np.float32), y=np.tile([0, 1], 6),
             sfreq=np.array(10.0))
    config = relpos.resolve_config(
        {"modality": {"name": "timeseries", "patch_s": 1.0}, "pretext": {"name": "part"}},
        overrides=[*TINY_OVERRIDES, "train.steps=1", "train.progress=false", "train.tensorboard=false",
                   f"out={folder / 'run'}"],
    )
    config.data = str(folder / "cases.npz")
    return relpos.train(config).run_dir


@pytest.mark.parametrize("data_info, reason", [
    ({"sfreq": 0}, "(The patch length in samples is not known"),
    ({"sfreq": "fast"}, "(could not convert string to float: 'fast')"),
    ({"sfreq": -10.0}, "is shorter than one sample at -10 Hz"),
])
def test_garbage_data_info_is_named_as_such(series_run, tmp_path, data_info, reason):
    run = tmp_path / "run"
    shutil.copytree(series_run, run)
    state = load_checkpoint(run, resume=True)
    state["data_info"] = data_info
    atomic_torch_save(state, checkpoint_path(run))
    with pytest.raises(RelposError) as info:
        relpos.load_encoder(run)
    message = str(info.value)
    # the checkpoint's 'data_info' is named first, not a setting the user never made (modality.sfreq_target)
    assert message.startswith(f"Checkpoint '{checkpoint_path(run)}' holds a description of its training data "
                              f"('data_info') that modality 'timeseries' cannot use")
    assert reason in message


def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("a\nb\x1b[31mc\rd\te") == "a\\nb\\x1b[31mc\\rd\\te"
    assert printable("Fp1 ‐ Cz, ü, 脑电") == "Fp1 ‐ Cz, ü, 脑电"
    assert printable("x\u202ey") == "x\\u202ey"  # right-to-left override


def test_data_inspect_escapes_file_names(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("two\nlines.png", "red\x1b[31m.png", "plain.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    capsys.readouterr()
    assert main(["data", "inspect", str(folder), "--modality", "image", "--set", "modality.image_size=8"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "  two\\nlines.png: 1 windows\n" in out and "  red\\x1b[31m.png: 1 windows\n" in out
    assert "  plain.png: 1 windows\n" in out


# -- memory while loading images ----------------------------------------------------------------------
def test_image_size_that_cannot_fit_is_refused_before_resizing(shades, monkeypatch):
    from relpos_modalities.image import modality as image

    monkeypatch.setattr(image, "available_memory_bytes", lambda: 2**30)
    modality = image.ImageModality(image.ImageConfig(image_size=16384, patch_size=4))
    monkeypatch.setattr(image, "_resize_square", lambda *a: pytest.fail("resized before checking"))
    # 24 grey 8×8 images to 16384² float32: 24 · 16384² · 4 B = 24.0 GiB, plus a 0.25 GiB chunk
    with pytest.raises(DataError) as info:
        modality.load(shades)
    assert str(info.value) == (
        f"Resizing 24 images of 1 channel to 16384×16384 px from '{shades}:x_train' (modality.image_size=16384) "
        f"needs about 24.2 GiB of memory, but 1.0 GiB is available; lower modality.image_size or read fewer "
        f"images with modality.max_images."
    )


def test_an_allocator_failure_while_resizing_gets_the_out_of_memory_sentence(shades, monkeypatch):
    from relpos_modalities.image import modality as image

    def fail(x, size):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(image, "_resize_square", fail)
    with pytest.raises(DataError, match=r"^Out of memory while resizing 24 images of 1 channel to 16×16 px"):
        image.ImageModality(image.ImageConfig(image_size=16, patch_size=4)).load(shades)


def test_resizing_chunk_by_chunk_gives_the_same_windows(shades, make_image_folder, monkeypatch):
    from relpos_modalities.image import modality as image

    config = image.ImageConfig(image_size=12, patch_size=4)
    whole = image.ImageModality(config).load(shades).x
    folder = make_image_folder()
    whole_folder = image.ImageModality(config).load(folder).x
    monkeypatch.setattr(image, "RESIZE_CHUNK_BYTES", 1)  # one image per chunk
    assert torch.equal(image.ImageModality(config).load(shades).x, whole)
    assert torch.equal(image.ImageModality(config).load(folder).x, whole_folder)
    assert whole.shape == (24, 1, 12, 12) and whole_folder.shape == (4, 3, 12, 12)
    assert float(whole.min()) >= -1.0 and float(whole.max()) <= 1.0


# -- resume and an edited config.yaml -------------------------------------------------------------------
def test_resume_names_each_edited_setting_and_keeps_the_edited_file(shades, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(_tiny_image_args(shades, out, steps=2)) == 0
    config_file = out / "config.yaml"
    edited = config_file.read_text().replace("  lr: 0.0005\n", "  lr: 0.5\n").replace("  seed: 0\n", "  seed: 7\n")
    assert edited != config_file.read_text()
    config_file.write_text(edited)
    capsys.readouterr()
    assert main(_tiny_image_args(shades, out, steps=3) + ["--resume"]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "was edited since the checkpoint" in line)
    assert "train.lr: 0.0005 in the checkpoint, 0.5 in the file; train.seed: 0 in the checkpoint, 7 in the file" \
        in warning
    assert "train.steps" not in warning  # --steps may change on resume
    assert (out / "config.yaml.edited").read_text() == edited
    assert "  lr: 0.0005\n" in config_file.read_text() and "  steps: 3\n" in config_file.read_text()
    assert load_checkpoint(out)["step"] == 3
