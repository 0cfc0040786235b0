"""The command line end to end on a small simulated CXI file, its refusal to overwrite, and bad input:
every user error is one line `cuptycho: error: ...` on stderr, exit code 2, no traceback, no output."""
from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cuptycho import checkpoint, cli
from cuptycho import config as C
from cuptycho.io import read_result

RUN_TOML = """
epochs = 8
batch = 8
seed = 2
init_probe = "data"
[object]
lr = 0.1
[probe]
enabled = true
lr = 0.05
[positions]
enabled = true
lr = 0.1
start_epoch = 2
[output]
checkpoint_every = 4
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(d / "sim.cxi")]) == 0
    (d / "run.toml").write_text(RUN_TOML)
    return d


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cuptycho: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_simulate_info_reconstruct_show(workdir, capsys):
    sim, out, png = workdir / "sim.cxi", workdir / "out.cxi", workdir / "out.png"
    assert cli.main(["info", str(sim)]) == 0
    text = capsys.readouterr().out
    assert "49 patterns of 64 x 64" in text and "detector distance 2 m" in text and "instrument_1/" in text

    assert cli.main(["reconstruct", str(sim), "--config", str(workdir / "run.toml"), "-o", str(out),
                     "--backend", "cpu", "--progress", "log"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "epoch 8/8" in captured.err
    with h5py.File(out, "r") as f:
        for name in ("entry_1/image_1/data", "entry_1/image_2/data", "entry_1/sample_1/geometry_1/translation",
                     "entry_1/ptychodus/loss_values", "entry_1/cuptycho/object", "entry_1/cuptycho/probe",
                     "entry_1/cuptycho/positions", "entry_1/cuptycho/positions_nominal", "entry_1/cuptycho/config",
                     "entry_1/cuptycho/history", "entry_1/process_1/program"):
            assert name in f, name
        assert f["entry_1/image_1/data"].shape == (1, 1, 64, 64)
    result = read_result(out)
    assert len(result.history) == 8 and result.device == "cpu"
    run = C.from_dict(result.config)                 # the effective configuration, complete
    assert run.config.epochs == 8 and run.config.positions.start_epoch == 2 and run.config.backend == "cpu"
    assert run.data["path"] == str(sim.resolve()) and run.output == {"checkpoint_every": 4}
    state = checkpoint.load(workdir / "out.ckpt.npz")     # checkpoints on: the last one follows the result
    assert state["epoch"] == 8 and C.from_dict(state["cli"]["config"]).config == run.config

    assert cli.main(["show", str(out), "-o", str(png)]) == 0
    from matplotlib.image import imread
    image = imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[:2] == (950, 1500)
    assert image[..., :3].std() > 0.1                          # not a blank page
    assert not list(workdir.glob(".*.tmp"))                   # no temporary files left behind


def test_reconstruct_with_a_pie_engine_and_resume_it(workdir, capsys):
    """--engine picks a classical engine; its checkpoint resumes it, and another engine is refused."""
    sim, out = workdir / "sim.cxi", workdir / "pie.cxi"
    args = ["reconstruct", str(sim), "-o", str(out), "--backend", "cpu", "--progress", "none"]
    assert cli.main([*args, "--engine", "rpie", "--epochs", "3", "--checkpoint-every", "2"]) == 0
    assert "of the rpie engine on cpu" in capsys.readouterr().err
    result = read_result(out)
    assert result.config["engine"] == "rpie" and len(result.history) == 3 and result.history[0]["batch"] == 1
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    ckpt = workdir / "pie.ckpt.npz"
    assert cli.main([*args, "--resume", str(ckpt), "--epochs", "5", "--force"]) == 0
    assert len(read_result(out).history) == 5 and read_result(out).config["engine"] == "rpie"
    capsys.readouterr()
    assert cli.main([*args, "--resume", str(ckpt), "--engine", "epie", "--epochs", "6", "--force"]) == 2
    assert "checkpoint is of a run of the 'rpie' engine" in error_line(capsys)
    (workdir / "poisson.toml").write_text('loss = "poisson"\n')
    assert cli.main([*args, "--engine", "epie", "--config", str(workdir / "poisson.toml"), "--force"]) == 2
    assert "the epie engine's Fourier-magnitude update is the gaussian loss's" in error_line(capsys)


def test_outputs_are_never_overwritten_without_force(workdir, capsys):
    sim, out = workdir / "sim.cxi", workdir / "keep.cxi"
    args = ["reconstruct", str(sim), "--config", str(workdir / "run.toml"), "-o", str(out), "--epochs", "1",
            "--checkpoint-every", "0", "--progress", "none"]
    assert cli.main(args) == 0
    before = out.read_bytes()
    assert cli.main(args) == 2
    assert "keep.cxi already exists; refusing to overwrite it" in error_line(capsys)
    assert out.read_bytes() == before
    assert cli.main(args + ["--force"]) == 0 and out.read_bytes() != before
    for argv in (["simulate", "small_farfield", "-o", str(sim)], ["show", str(out), "-o", str(sim)]):
        stamp = sim.read_bytes()
        assert cli.main(argv) == 2
        assert "already exists" in error_line(capsys) and sim.read_bytes() == stamp
    # an earlier run's checkpoint is an output too
    (workdir / "other.ckpt.npz").write_bytes(b"an earlier checkpoint")
    assert cli.main(["reconstruct", str(sim), "-o", str(workdir / "other.cxi"), "--progress", "none"]) == 2
    assert "other.ckpt.npz already exists (the checkpoint of an earlier run?)" in error_line(capsys)
    assert not (workdir / "other.cxi").exists()
    # and the input is never the output
    assert cli.main(["reconstruct", str(sim), "-o", str(sim), "--force"]) == 2
    assert "is the input data file" in error_line(capsys)


def test_resume_keeps_the_checkpoints_settings(workdir, capsys):
    sim, out = workdir / "sim.cxi", workdir / "res.cxi"
    assert cli.main(["reconstruct", str(sim), "--config", str(workdir / "run.toml"), "-o", str(out),
                     "--progress", "none", "--epochs", "4"]) == 0
    ckpt = workdir / "res.ckpt.npz"
    assert checkpoint.load(ckpt)["epoch"] == 4
    other = workdir / "other.toml"
    other.write_text(RUN_TOML.replace("lr = 0.05", "lr = 0.5"))
    assert cli.main(["reconstruct", "--resume", str(ckpt), "--config", str(other), "-o", str(out), "--force"]) == 2
    assert "sets probe.lr = 0.5 but the checkpoint's run used 0.05" in error_line(capsys)
    # extending the finished run: the checkpoint's data file and configuration, 2 more epochs
    assert cli.main(["reconstruct", "--resume", str(ckpt), "-o", str(out), "--epochs", "6", "--force",
                     "--progress", "none"]) == 0
    assert len(read_result(out).history) == 6 and checkpoint.load(ckpt)["epoch"] == 6


# --------------------------------------------------------------------------- bad input

def _truncated(d, sim):
    raw = sim.read_bytes()
    (d / "cut.cxi").write_bytes(raw[: len(raw) // 2])
    return d / "cut.cxi"


def _junk(d, sim):
    (d / "junk.cxi").write_bytes(b"not an HDF5 file" * 64)
    return d / "junk.cxi"


def _no_data(d, sim):
    with h5py.File(d / "empty.cxi", "w") as f:
        f.create_group("entry_1/instrument_1")
    return d / "empty.cxi"


def _copy(d, sim, name):
    (d / name).write_bytes(sim.read_bytes())
    return d / name


def _mismatched(d, sim):
    path = _copy(d, sim, "short.cxi")
    with h5py.File(path, "a") as f:
        del f["entry_1/cuptycho"]                       # the positions then come from the translations
        t = f["entry_1/sample_1/geometry_1/translation"][()]
        del f["entry_1/sample_1/geometry_1/translation"]
        f["entry_1/sample_1/geometry_1/translation"] = t[:-3]
    return path


def _nan(d, sim):
    path = _copy(d, sim, "nan.cxi")
    with h5py.File(path, "a") as f:
        f["entry_1/instrument_1/detector_1/data"][5] = np.nan
    return path


BAD_DATA = {
    "truncated": (_truncated, r"cut\.cxi: not a readable HDF5 file; is it truncated or corrupt\?"),
    "corrupt": (_junk, r"junk\.cxi: not a readable HDF5 file"),
    "missing keys": (_no_data, r"empty\.cxi: no diffraction data: looked for /entry_1/data_1/data"),
    "mismatched counts": (_mismatched, r"short\.cxi: 49 patterns but the translations at "
                                       r"/entry_1/sample_1/geometry_1/translation have shape \(46, 3\)"),
    "nan frames": (_nan, r"nan\.cxi: 1 frame\(s\) contain NaN or Inf values \(frame 5\)"),
    "absent": (lambda d, sim: d / "absent.cxi", r"absent\.cxi: no such file"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_and_exit_code_2(workdir, capsys, case):
    make, message = BAD_DATA[case]
    path = make(workdir, workdir / "sim.cxi")
    out = workdir / f"bad-{case.replace(' ', '-')}.cxi"
    assert cli.main(["reconstruct", str(path), "-o", str(out), "--progress", "none"]) == 2
    line = error_line(capsys)
    assert line.startswith("cuptycho: error: ") and re.search(message, line), line
    assert not out.exists() and not out.with_suffix(".ckpt.npz").exists()
    if case in ("truncated", "corrupt", "absent"):       # info cannot read it either
        assert cli.main(["info", str(path)]) == 2
        error_line(capsys)
    else:                                                # info describes the file and says what is wrong
        assert cli.main(["info", str(path)]) == 0
        out = capsys.readouterr().out
        assert "(not read as a dataset without more options:" in out and re.search(message, out)


BAD_USE = [
    ("[probe]\nlrr = 0.1\n", None, r"config .*bad\.toml: unknown key 'probe\.lrr' \(did you mean 'probe\.lr'\?\)"),
    ("epochs = -3\n", None, r"'epochs' must be >= 0, got -3"),
    ('[data]\npositions = "positions.csv"\n', None, r"sim\.cxi: a \[data\] option does not apply to this kind of "
                                                     r"file \(read_cxi got unexpected keyword\(s\) \['positions'\]\)"),
    ("[data]\ndetector_distance = -1.0\n", None, r"'data\.detector_distance' must be positive"),
    ('init_probe = "dataset"\n', None, r"init_probe='dataset' but the dataset has no probe guess"),
    ("", "resume-junk", r"junk\.npz is not a readable cuptycho checkpoint"),
]


@pytest.mark.parametrize("toml, special, message", BAD_USE)
def test_bad_configuration_is_one_line_and_exit_code_2(workdir, capsys, toml, special, message):
    (workdir / "bad.toml").write_text(toml)
    argv = ["reconstruct", str(workdir / "sim.cxi"), "--config", str(workdir / "bad.toml"), "-o",
            str(workdir / "never.cxi"), "--progress", "none"]
    if special == "resume-junk":
        (workdir / "junk.npz").write_bytes(b"PK\x03\x04 not really")
        argv += ["--resume", str(workdir / "junk.npz")]
    assert cli.main(argv) == 2
    assert re.search(message, error_line(capsys))
    assert not (workdir / "never.cxi").exists()


def test_show_needs_a_result_file(workdir, capsys):
    assert cli.main(["show", str(workdir / "sim.cxi"), "-o", str(workdir / "x.png")]) == 2
    assert "sim.cxi: not a cuptycho result file" in error_line(capsys)
    assert not (workdir / "x.png").exists()


def test_simulate_from_a_toml_table(workdir, capsys):
    (workdir / "sim.toml").write_text('[simulate]\npreset = "small_nearfield"\nseed = 3\nposition_error = 1.0\n')
    out = workdir / "near.cxi"
    assert cli.main(["simulate", "--config", str(workdir / "sim.toml"), "-o", str(out)]) == 0
    assert "propagation distance z 0.001 m" in capsys.readouterr().out
    from cuptycho import io
    ds = io.load(out)
    assert ds.propagator == "angular_spectrum" and ds.z == pytest.approx(1e-3) and ds.n_patterns == 25
    (workdir / "nosim.toml").write_text("epochs = 3\n")
    assert cli.main(["simulate", "--config", str(workdir / "nosim.toml"), "-o", str(workdir / "n2.cxi")]) == 2
    assert "no [simulate] table" in error_line(capsys)
    (workdir / "badsim.toml").write_text('[simulate]\nscan = "spiral"\n')
    assert cli.main(["simulate", "--config", str(workdir / "badsim.toml"), "-o", str(workdir / "n2.cxi")]) == 2
    assert "scan" in error_line(capsys) and not (workdir / "n2.cxi").exists()


def test_bench_builtin(capsys):
    assert cli.main(["bench", "--builtin", "--backend", "cpu", "--repeat", "2"]) == 0
    assert "loss_and_grad on cpu, 49 patterns of 64 x 64" in capsys.readouterr().out


def test_bench_runs_the_checkouts_benchmark(capsys):
    if cli._bench_module() is None:
        pytest.skip("no benchmarks/bench_gradient.py next to the package (not a source checkout)")
    argv = ["bench", "--backend", "cpu", "--", "--sizes", "32", "--batches", "4", "--modes", "1", "--repeat", "1",
            "--no-reference"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "benchmarks/bench_gradient.py --sizes 32" in out and "--device cpu" in out
    assert any(line.split()[:3] == ["32", "4", "1"] for line in out.splitlines())


def test_a_user_error_in_a_subprocess_has_no_traceback(workdir):
    path = _truncated(workdir, workdir / "sim.cxi")
    run = subprocess.run([sys.executable, "-m", "cuptycho", "reconstruct", str(path), "-o",
                          str(workdir / "sub.cxi")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cuptycho: error: {path}: not a readable HDF5 file; is it "
                                                   "truncated or corrupt?")
    assert run.stdout == "" and not (workdir / "sub.cxi").exists()


def test_the_run_says_what_it_refines_and_what_it_keeps_fixed(workdir, capsys):
    """The probe is off by default in a library Config: the command line says so rather than leave it silent."""
    common = ["--config", str(workdir / "run.toml"), "--backend", "cpu", "--epochs", "1"]
    assert cli.main(["reconstruct", str(workdir / "sim.cxi"), "-o", str(workdir / "fixed_probe.cxi"), *common,
                     "--set", "probe.enabled=false"]) == 0
    # the detector groups are the command line's defaults for measured data (cuptycho.defaults)
    refined = "positions (from epoch 2), background (from epoch 10), scale (from epoch 10)"
    assert f"; refines object, {refined}; fixed: probe\n" in capsys.readouterr().err
    assert cli.main(["reconstruct", str(workdir / "sim.cxi"), "-o", str(workdir / "refined_probe.cxi"), *common]) == 0
    assert f"; refines object, probe, {refined}\n" in capsys.readouterr().err


def test_a_probe_from_the_file_that_is_rescaled_is_said_so(workdir, capsys):
    from cuptycho import io as cio

    ds = cio.load(workdir / "sim.cxi")
    spot = np.exp(-((np.arange(64) - 32.0) ** 2) / 200.0)
    path = cio.write_cxi(workdir / "with_probe.cxi", ds.replace(probe=(spot[:, None] * spot[None])[None]
                                                                .astype(np.complex64)))
    common = ["--config", str(workdir / "run.toml"), "--backend", "cpu", "--epochs", "1",
              "--set", 'init_probe="dataset"']
    assert cli.main(["reconstruct", str(path), "-o", str(workdir / "probe_scaled.cxi"), *common]) == 0
    assert re.search(r"; the given probe scaled by [0-9.e+-]+ to the data's counts \(fit_probe_scale\)\n",
                     capsys.readouterr().err)
    assert cli.main(["reconstruct", str(path), "-o", str(workdir / "probe_kept.cxi"), *common,
                     "--set", "fit_probe_scale=false"]) == 0
    assert "the given probe scaled" not in capsys.readouterr().err


def test_a_result_without_geometry_is_said_to_be_in_pixels(workdir, capsys):
    from cuptycho import Dataset
    from cuptycho import io as cio

    ds = cio.load(workdir / "sim.cxi")
    bare = cio.write_cxi(workdir / "bare.cxi", Dataset(ds.data, ds.positions, obj_shape=ds.obj_shape))
    assert cli.main(["reconstruct", str(bare), "-o", str(workdir / "bare_result.cxi"), "--backend", "cpu",
                     "--epochs", "1"]) == 0
    assert "records no wavelength, detector distance and pixel size: lengths in" in capsys.readouterr().err
    assert cli.main(["reconstruct", str(workdir / "sim.cxi"), "-o", str(workdir / "metres.cxi"), "--backend", "cpu",
                     "--epochs", "1"]) == 0
    assert "records no wavelength" not in capsys.readouterr().err


def test_the_detector_model_from_a_config_file(workdir, capsys):
    """[simulate] background / scale_jitter make the data; [background] and [scale] refine the model, the
    log shows it, and the result file holds it."""
    sim, out, toml = workdir / "bg.cxi", workdir / "bg-out.cxi", workdir / "bg.toml"
    toml.write_text('[simulate]\npreset = "small_farfield"\nbackground = 0.15\nscale_jitter = 0.1\n\n'
                    '[background]\nenabled = true\nstart_epoch = 1\n\n[scale]\nenabled = true\nstart_epoch = 1\n')
    assert cli.main(["simulate", "--config", str(toml), "-o", str(sim)]) == 0
    assert cli.main(["reconstruct", str(sim), "--config", str(toml), "-o", str(out), "--epochs", "3",
                     "--backend", "cpu", "--progress", "log", "--checkpoint-every", "0"]) == 0
    err = capsys.readouterr().err
    assert "background (from epoch 1), scale (from epoch 1)" in err and "  background " in err and "scale-std" in err
    result = read_result(out)
    assert result.background.shape == (64, 64) and result.background.max() > 0 and result.scale.shape == (49,)


def test_measured_data_defaults_fill_what_the_configuration_leaves_out(workdir, capsys):
    """With no --config, the defaults for measured data (cuptycho.defaults) set the schedule and say so; a key
    the configuration or --set gives wins over them."""
    sim = workdir / "sim.cxi"
    out = workdir / "defaults.cxi"
    assert cli.main(["reconstruct", str(sim), "-o", str(out), "--epochs", "2", "--backend", "cpu",
                     "--progress", "none", "--checkpoint-every", "0", "--set", "batch=7"]) == 0
    assert "defaults for measured data" in capsys.readouterr().err
    cfg = read_result(out).config
    assert cfg["epochs"] == 2 and cfg["batch"] == 7                           # given: theirs
    assert cfg["object"]["lr"] == 0.04 and cfg["object"]["schedule"]["gamma"] == 0.125
    assert cfg["positions"]["enabled"] and cfg["positions"]["start_epoch"] == 5 and cfg["probe"]["enabled"]
    toml = workdir / "nopos.toml"
    toml.write_text("[positions]\nenabled = false\n")
    out2 = workdir / "nopos.cxi"
    assert cli.main(["reconstruct", str(sim), "--config", str(toml), "-o", str(out2), "--epochs", "1",
                     "--backend", "cpu", "--progress", "none", "--checkpoint-every", "0"]) == 0
    assert read_result(out2).config["positions"]["enabled"] is False           # the file's table wins
