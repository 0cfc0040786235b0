"""One schema: the TOML reader and writer, the command line's --set and `Config` take exactly the
options `cuptycho.settings` declares, and the engine registry runs exactly the engines it names."""
from __future__ import annotations

import dataclasses

import pytest

from cuptycho import Config, Group, Reconstruction, cli, engines, settings
from cuptycho import config as C


def _example(f):
    meta = f.metadata
    if meta["example"] is not None:
        return meta["example"]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _toml_value(value):
    """A value as a --set argument writes it (TOML, inline tables for dicts)."""
    return C.dumps({"v": C._plain(value)}).split(" = ", 1)[1].strip()


def _every_key():
    """(dotted key, an example value) for every key of the schema."""
    out = []
    for f in settings.fields_of(Config, toml=True):
        if f.name in settings.GROUPS:
            out += [(f"{f.name}.{g.name}", _example(g)) for g in settings.fields_of(Group, toml=True)]
        elif f.name in settings.TABLES:
            out += [(f"{f.name}.{t.name}", _example(t)) for t in settings.fields_of(settings.TABLES[f.name], toml=True)]
        else:
            out.append((f.name, _example(f)))
    for name, cls in settings.SECTIONS.items():
        out += [(f"{name}.{t.name}", _example(t)) for t in settings.fields_of(cls, toml=True)]
    return out


EVERY_KEY = _every_key()
# a table key whose example needs a companion to be valid on its own
COMPANIONS = {"batch.factor": {"start": 8}, "batch.every": {"start": 8}, "batch.max": {"start": 8}}
ENGINE_OF = {"pie.friction": "mpie", "pie.feedback": "mpie", "pie.momentum_every": "mpie"}
# options an engine honours only with another group enabled (it refuses them otherwise)
NEEDS = {"position_search": {"positions": {"enabled": True}}, "constraints.probe_support": {"probe": {"enabled": True}}}


def test_the_schema_lists_every_key_once():
    keys = settings.keys()
    assert len(keys) == len(set(keys)) and set(keys) == {k for k, _ in EVERY_KEY}
    assert {k.split(".")[0] for k in keys} == {*settings.keys_of(Config), *settings.SECTIONS}
    # the only options a file cannot hold are Python objects, and they say so
    python_only = [f"{cls.__name__}.{f.name}" for cls in (Config, Group, *settings.TABLES.values())
                   for f in settings.fields_of(cls) if f.metadata["python_only"]]
    assert python_only == ["Config.progress", "TV.mask"]


@pytest.mark.parametrize("key, value", EVERY_KEY, ids=[k for k, _ in EVERY_KEY])
def test_every_key_is_accepted_by_the_file_the_command_line_and_config(key, value):
    table, _, name = key.rpartition(".")
    doc = {"engine": ENGINE_OF.get(key, "rpie")} if table == "pie" else {}
    if key in COMPANIONS:
        doc[table] = dict(COMPANIONS[key])
    for prefix, extra in NEEDS.items():
        if key == prefix or key.startswith(prefix + "."):
            doc.update(extra)
    # the command line: --set KEY=VALUE, parsed as cli.main parses it, applied over a document
    parsed_key, parsed = C.parse_assignment(f"{key}={_toml_value(value)}")
    assert parsed_key == key
    run = C.from_dict(C.override(doc, key, parsed))
    # the file: the same key in TOML text, read back
    text = C.dumps(C.override(doc, key, C._plain(value)))
    again = C.loads(text)
    assert again.config == run.config and again.data == run.data and again.output == run.output
    # Config: the value is there, and the written configuration reads back to the same Config
    if table in settings.SECTIONS:
        assert key.split(".")[1] in getattr(run, table)
        return
    stored = getattr(run.config, table or name)
    if table in settings.GROUPS:
        assert getattr(stored, name) == parsed if not isinstance(parsed, list) else tuple(parsed)
    elif table:
        assert name in stored
    assert C.loads(C.effective_config_toml(run.config)).config == run.config
    run.config.check()


@pytest.mark.parametrize("key", ["probes", "probe.lrr", "tv.weight", "data.focus_distanse", "output.every", "pie.gamma"])
def test_unknown_keys_are_refused_everywhere(key):
    with pytest.raises(C.ConfigError, match="unknown key"):
        C.from_dict(C.override({}, key, 1))
    table, _, name = key.rpartition(".")
    if table in settings.TABLES:
        with pytest.raises(ValueError, match=r"unknown .*\(s\)"):
            Config(**{table: {name: 1}}).check()
    elif not table:
        with pytest.raises(TypeError):
            Config(**{name: 1})


def test_set_on_the_command_line(tmp_path, capsys):
    sim, out = tmp_path / "sim.cxi", tmp_path / "out.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    argv = ["reconstruct", str(sim), "-o", str(out), "--progress", "none", "--backend", "cpu"]
    assert cli.main([*argv, "--set", "epochs=2", "--set", "batch=7", "--set", "probe.lr=0.02",
                     "--set", "engine=gradient"]) == 0
    from cuptycho.io import read_result
    result = read_result(out)
    assert len(result.history) == 2 and result.history[0]["batch"] == 7 and result.config["probe"]["lr"] == 0.02
    capsys.readouterr()
    assert cli.main([*argv, "--force", "--set", "probe.lrr=1"]) == 2
    assert "unknown key 'probe.lrr' (did you mean 'probe.lr'?)" in capsys.readouterr().err
    assert cli.main([*argv, "--force", "--set", "probe"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_the_registry_runs_exactly_the_engines_the_schema_names():
    assert tuple(engines.REGISTRY) == settings.ENGINES
    assert tuple(cli.parser()._subparsers._group_actions[0].choices["reconstruct"]._option_string_actions[
        "--engine"].choices) == settings.ENGINES
    for name, cls in engines.REGISTRY.items():
        assert name in cls.ENGINES
    with pytest.raises(ValueError, match="build it with cuptycho.engines.create"):
        Reconstruction(None, Config(engine="rpie"))


def test_the_resumable_run_from_python(tmp_path):
    """`run.reconstruct_file`: what `cuptycho reconstruct` does, with overrides checked by the schema."""
    from cuptycho import run
    from cuptycho.io import read_result

    sim, out = tmp_path / "sim.cxi", tmp_path / "out.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    records = []
    outcome = run.reconstruct_file(sim, output=out, overrides={"epochs": 3, "backend": "cpu", "batch": 16},
                                   checkpoint_every=2, progress=records.append, handle_signals=False)
    assert outcome.complete and outcome.stopped_by is None and [r["epoch"] for r in records] == [0, 1, 2]
    assert len(read_result(out).history) == 3 and outcome.checkpoint.exists()
    resumed = run.reconstruct_file(sim, output=out, resume=outcome.checkpoint, overrides={"epochs": 4}, force=True)
    assert resumed.start_epoch == 3 and len(resumed.result.history) == 4
    with pytest.raises(ValueError, match="sets batch = 8 but the checkpoint's run used 16"):
        run.ResumableRun(sim, output=out, resume=outcome.checkpoint, overrides={"batch": 8}, force=True)
    with pytest.raises(C.ConfigError, match="unknown key 'probe.lrr'"):
        run.ResumableRun(sim, output=tmp_path / "x.cxi", overrides={"probe.lrr": 1})
