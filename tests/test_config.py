"""TOML configuration: every engine option round-trips; every invalid setting is one message naming the key."""
from __future__ import annotations

import sys

import pytest

from cuptycho import Config, Group
from cuptycho import config as C
from cuptycho import run as R

if sys.version_info >= (3, 11):
    import tomllib
else:                                            # pragma: no cover
    import tomli as tomllib


def everything() -> Config:
    """A Config with every option away from its default."""
    return Config(
        epochs=7, batch={"start": 8, "factor": 2, "every": 20, "max": 64}, loss=[(0, "gaussian"), (4, "poisson")],
        object=Group(lr=0.1, schedule={"kind": "step", "every": 40, "gamma": 0.5}),
        object_modes=Group(enabled=False, start_epoch=3, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        probe=Group(enabled=True, lr=0.05, schedule={"kind": "plateau", "patience": 3, "factor": 0.5}),
        positions=Group(enabled=True, lr=0.2, start_epoch=50, schedule="plateau"),
        z=Group(enabled=True, lr=1e-4, start_epoch=5),
        position_l1=0.01, max_position_correction=3.0, n_object_modes=2, n_probe_modes=3,
        init_probe={"aperture": 12.0}, fit_probe_scale=False,
        tv={"ratio": 0.01, "p": 2.0, "q": 1.0, "eps": 1e-3, "reduction": "sum"},
        amplitude_range={"low": 0.1, "high": 1.0, "weight": 2.0}, probe_power={"weight": 0.1, "target": 5e6},
        constraints={"orthogonalize_probe": True, "recentre_probe": True, "zero_probe_phase": False,
                     "renormalise": True, "phase_range": (-1.0, 1.0), "amplitude_range": (0.0, 1.5)},
        early_stop={"patience": 5, "min_delta": 1e-4}, max_divergences=2, divergence_factor=20.0, seed=3, backend="cpu",
        dtype="complex128", profile=True, metrics_every=4)


def test_every_option_round_trips_through_toml():
    cfg = everything()
    data = {"path": "/data/scan.cxi", "geometry_kind": "nearfield", "focus_distance": 3.65e-3,
            "propagator": "angular_spectrum", "padding": [16, 32], "energy_kev": 8.7, "detector_distance": 5.0,
            "detector_pixel_size": [75e-6, 55e-6], "crop": [256, 256], "center": "mass", "bin": 2,
            "frames": {"start": 0, "stop": 100, "step": 2}, "fftshift": True, "saturation": 6e5, "mask_bits": 1,
            "margin": 8, "obj_shape": [300, 400], "entry": "entry_1", "chunk_bytes": 1 << 20}
    text = C.effective_config_toml(cfg, data=data, output={"checkpoint_every": 25})
    assert text.startswith("# cuptycho")
    doc = tomllib.loads(text)                    # valid TOML
    assert doc["probe"]["schedule"] == {"kind": "plateau", "patience": 3, "factor": 0.5}
    run = C.loads(text)
    assert run.config == cfg
    assert run.data == data and run.output == {"checkpoint_every": 25}
    assert C.loads(C.effective_config_toml(run.config, data=run.data, output=run.output)).config == cfg


def test_pie_engine_options_round_trip_through_toml():
    cfg = Config(engine="mpie", batch=4, probe=Group(enabled=True), positions=Group(lr=0.3, start_epoch=5),
                 pie={"alpha": 0.2, "beta": 0.9, "object_step": 0.8, "probe_step": 0.7, "friction": 0.6,
                      "feedback": 0.35, "momentum_every": 10, "position_upsample": 50.0, "position_amplify": 0.5,
                      "position_max_step": 0.5})
    text = C.effective_config_toml(cfg)
    assert tomllib.loads(text)["pie"]["momentum_every"] == 10
    assert C.loads(text).config == cfg


def test_defaults_round_trip_and_absent_keys_keep_the_engine_defaults():
    assert C.loads("").config == Config()
    assert C.loads(C.effective_config_toml(Config())).config == Config()
    run = C.loads("epochs = 5\n[probe]\nenabled = true\n")
    assert run.config.probe == Group(enabled=True, lr=Config().probe.lr)
    assert run.explicit == {"epochs", "probe.enabled"}


def test_the_writer_escapes_strings_and_keys():
    doc = {"data": {"path": 'a "quoted" \\ path\nwith ünïcode and \x7f', "entry": "x"},
           "simulate": {"probe_options": {"odd key": [1, 2.5, True, "s"]}, "photons": float("inf")}}
    back = tomllib.loads(C.dumps(doc))
    assert back["data"] == doc["data"] and back["simulate"] == doc["simulate"]


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "run.toml"
    f.write_text('[data]\npath = "scan.cxi"\ndark = "../dark.tif"\n')
    run = C.load(f)
    assert run.data["path"] == str(tmp_path / "sub" / "scan.cxi")
    assert run.data["dark"] == str(tmp_path / "dark.tif")


def test_reader_options_convert_units_and_frames():
    run = C.loads('[data]\npath = "x.cxi"\nenergy_kev = 10.0\nframes = {start = 2, stop = 9}\ncrop = [64, 64]\n')
    opts = R.reader_options(run.data)
    assert "path" not in opts and opts["frames"] == slice(2, 9, None) and opts["crop"] == (64, 64)
    assert opts["energy"] == pytest.approx(10e3 * 1.602176634e-19)


def test_simulate_table():
    run = C.loads('[simulate]\npreset = "small_nearfield"\nseed = 4\nposition_error = 1.5\n')
    assert run.simulate == {"preset": "small_nearfield", "seed": 4, "position_error": 1.5}


BAD = [
    # syntax and structure
    ("epochs = ", r"^config: not valid TOML"),
    ("probes = 1", r"unknown key 'probes' \(did you mean 'probe'\?\)"),
    ("[probe]\nlrr = 0.1", r"^config: unknown key 'probe\.lrr' \(did you mean 'probe\.lr'\?\)$"),
    ("lr = 0.1", r"unknown key 'lr' \('lr' belongs in \[object\], \[object_modes\], \[probe\], \[positions\], "
                 r"\[scan\], \[z\], \[focus\], \[background\], \[scale\]\)"),
    ("[probe]\nwhatever = 1", r"unknown key 'probe\.whatever' \(known keys of \[probe\]: betas, enabled, eps, lr"),
    ("probe = 3", r"'probe' must be a table, got an integer 3"),
    # scalars
    ('epochs = "10"', r"'epochs' must be an integer, got a string '10'"),
    ("epochs = 1.5", r"'epochs' must be an integer, got a number 1.5"),
    ("epochs = -1", r"'epochs' must be >= 0, got -1"),
    ("seed = true", r"'seed' must be an integer, got a boolean True"),
    ('backend = "gpu"', r"'backend' must be one of 'auto', 'numpy', 'cpu', 'cuda', got 'gpu'"),
    ('dtype = "complex32"', r"'dtype' must be one of 'complex64', 'complex128', got 'complex32' \(did you mean "
                            r"'complex128'\?\)"),
    ("max_position_correction = 0", r"'max_position_correction' must be positive, got 0.0"),
    ("metrics_every = 0", r"'metrics_every' must be >= 1"),
    ("fit_probe_scale = 1", r"'fit_probe_scale' must be true or false, got an integer 1"),
    ("position_l1 = nan", r"'position_l1' must be a number, got nan"),
    # batch, loss, init_probe
    ("batch = 0", r"'batch' must be >= 1, got 0"),
    ('batch = "half"', r"'batch' must be \"full\", an integer >= 1 or a table"),
    ("batch = 2.5", r"'batch' must be \"full\", an integer >= 1 or a table \{start, factor, every, max\}, got a "
                    r"number 2.5"),
    ("batch = {factor = 2}", r"'batch' needs 'start'"),
    ("batch = {start = 8, grow = 2}", r"unknown key 'batch\.grow'"),
    ('loss = "poison"', r"'loss' must be one of .* got 'poison' \(did you mean 'poisson'\?\)"),
    ('loss = [[5, "gaussian"]]', r"'loss' must start at epoch 0"),
    ('loss = [[0, "gaussian"], [0, "poisson"]]', r"'loss' names two losses for the same epoch"),
    ('loss = [["gaussian"]]', r"'loss\[0\]' must be an \[epoch, name\] pair"),
    ("loss = 3", r"'loss' must be a loss name or an array of \[epoch, name\] pairs"),
    ('init_probe = "guess"', r"'init_probe' must be one of 'dataset', 'data'"),
    ("init_probe = {radius = 3}", r"unknown key 'init_probe\.radius' \(known keys of \[init_probe\]: aperture\)"),
    ("init_probe = {}", r"'init_probe' as a table needs 'aperture'"),
    ("init_probe = 3", r"'init_probe' must be \"dataset\", \"data\" or \{aperture = radius_px\}"),
    # groups and schedules
    ("[probe]\nlr = -0.1", r"'probe\.lr' must be positive, got -0.1"),
    ('[probe]\nlr = "fast"', r"'probe\.lr' must be a number, got a string 'fast'"),
    ("[object]\nenabled = 1", r"'object\.enabled' must be true or false"),
    ("[object]\nbetas = [0.9]", r"'object\.betas' must be a pair of numbers \[a, b\]"),
    ("[object]\nbetas = [0.9, 1.0]", r"'object\.betas' must lie in \[0, 1\)"),
    ("[object]\nstart_epoch = -2", r"'object\.start_epoch' must be >= 0"),
    ('[positions]\nschedule = "cosine"', r"'positions\.schedule' must be one of 'constant', 'step', 'plateau'"),
    ('[positions]\nschedule = {kind = "step", every = 10}', r"'positions\.schedule' is not a valid schedule: a 'step' "
                                                              r"schedule needs \['gamma'\]"),
    ('[positions]\nschedule = {kind = "step", every = 10, gama = 0.5}',
     r"unknown key 'positions\.schedule\.gama' \(did you mean 'positions\.schedule\.gamma'\?\)"),
    ("[positions]\nschedule = {every = 10}", r"'positions\.schedule' needs a 'kind'"),
    ('[positions]\nschedule = {kind = "step", every = 0, gamma = 0.5}', r"'positions\.schedule' is not a valid "
                                                                        r"schedule: .*every"),
    ("[z]\nschedule = 3", r"'z\.schedule' must be a schedule name or a table"),
    # option tables
    ("[tv]\np = -1", r"'tv\.p' must be positive, got -1.0"),
    ("[tv]\nweight = 1", r"unknown key 'tv\.weight' \(the TV weight is adaptive.*set 'tv\.ratio'\)"),
    ('[tv]\nreduction = "max"', r"'tv\.reduction' must be one of 'mean', 'sum'"),
    ("[amplitude_range]\nlow = 1.0\nhigh = 0.5", r"'amplitude_range' is not valid: high must be >= low"),
    ("[probe_power]\ntarget = 0", r"'probe_power\.target' must be positive"),
    ("[constraints]\northogonalise_probe = true", r"unknown key 'constraints\.orthogonalise_probe' \(did you mean "
                                                  r"'constraints\.orthogonalize_probe'\?\)"),
    ("[constraints]\nphase_range = 1.0", r"'constraints\.phase_range' must be a pair of numbers"),
    ("[constraints]\nphase_range = [1.0, -1.0]", r"'constraints\.phase_range' must be \[low, high\] with low <= high"),
    ('[constraints]\nrenormalise = "yes"', r"'constraints\.renormalise' must be true or false"),
    ("[early_stop]\npatience = 0", r"'early_stop\.patience' must be >= 1"),
    # the PIE engines
    ('engine = "dm"', r"'engine' must be one of 'gradient', 'epie', 'rpie', 'mpie', got 'dm'"),
    ('engine = "rpie"\n[pie]\nalhpa = 0.1', r"unknown key 'pie\.alhpa' \(did you mean 'pie\.alpha'\?\)"),
    ('engine = "rpie"\n[pie]\nalpha = "low"', r"'pie\.alpha' must be a number, got a string 'low'"),
    ('engine = "mpie"\n[pie]\nmomentum_every = 0', r"'pie\.momentum_every' must be >= 1"),
    ('engine = "rpie"\n[pie]\nalpha = 2.0', r"pie\.alpha must lie in \[0, 1\], got 2\.0"),
    ('engine = "epie"\nloss = "poisson"', r"the epie engine's Fourier-magnitude update is the gaussian loss's"),
    ('[pie]\nalpha = 0.1', r"pie settings \['alpha'\] apply to the PIE engines, but engine is 'gradient'"),
    # data, output, simulate
    ("[data]\nfocus_distanse = 1e-3", r"unknown key 'data\.focus_distanse' \(did you mean 'data\.focus_distance'\?\)"),
    ("[data]\ncrop = [0, 64]", r"'data\.crop' must be >= 1"),
    ('[data]\ngeometry_kind = "nearfeld"', r"'data\.geometry_kind' must be one of 'farfield', 'nearfield', got "
                                           r"'nearfeld' \(did you mean 'nearfield'\?\)"),
    ("[data]\npath = 3", r"'data\.path' must be a string"),
    ("[data]\ndetector_pixel_size = -1e-6", r"'data\.detector_pixel_size' must be positive"),
    ('[data]\nframes = "all"', r"'data\.frames' must be an array of indices or a table \{start, stop, step\}"),
    ("[data]\nenergy_kev = 8.0\nwavelength = 1e-10", r"'data\.energy_kev' conflicts with 'data\.wavelength'"),
    ('[data]\ncenter = "middle"', r"'data\.center' must be one of 'mass', 'max'"),
    ("[output]\ncheckpoint_every = -1", r"'output\.checkpoint_every' must be >= 0"),
    ("[output]\nevery = 5", r"unknown key 'output\.every'"),
    ('[simulate]\npreset = "huge"', r"'simulate\.preset' must be one of 'small_farfield', 'small_nearfield'"),
    ("[simulate]\nposition_eror = 1.0", r"unknown key 'simulate\.position_eror' \(did you mean "
                                        r"'simulate\.position_error'\?\)"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[b[0].replace("\n", " ") for b in BAD])
def test_invalid_settings_are_one_message_naming_the_key(text, message):
    with pytest.raises(C.ConfigError, match=message) as info:
        C.loads(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_files_name_themselves(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[probe]\nlrr = 1\n")
    with pytest.raises(C.ConfigError, match=r"^config .*run\.toml: unknown key 'probe\.lrr'"):
        C.load(f)
    with pytest.raises(C.ConfigError, match=r"^config .*absent\.toml: no such file"):
        C.load(tmp_path / "absent.toml")
