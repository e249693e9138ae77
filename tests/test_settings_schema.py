"""The settings schema drives the CLI: every setting has its flag, its help text and a lossless round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rnnstudio.cli import build_parser, train_config_from_args
from rnnstudio.config import SamplingConfig, TrainConfig, command_for_config, saved_settings
from rnnstudio.settings import (SettingError, check, expand, from_args, markdown_table, render_error, replace_tables,
                                schema, to_argv)


def _subparser(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


USER_SETTINGS = [s for s in schema(TrainConfig) if s.meta.cli]
GENERATE_SETTINGS = [s for s in schema(SamplingConfig) if s.meta.cli]
EVERY_SETTING = [("train", s) for s in USER_SETTINGS] + [("generate", s) for s in GENERATE_SETTINGS]


@pytest.mark.parametrize("command,s", EVERY_SETTING, ids=lambda x: x if isinstance(x, str) else x.name)
def test_every_setting_has_its_flag_and_help_from_the_schema(command, s):
    actions = {a.dest: a for a in _subparser(command)._actions}
    action = actions[s.name]
    assert s.flag in action.option_strings
    assert action.help.replace("%%", "%").startswith(s.meta.help)


def _non_default(s):
    """A valid value for ``s`` that differs from its default."""
    if s.meta.choices:
        return next(c for c in s.meta.choices if c != s.default)
    if s.kind == "bool":
        return not s.default
    if s.kind == "options":
        return {"some_key": "some value"}
    if s.kind == "int":
        return (s.default or 0) + 3 if s.meta.max is None or (s.default or 0) + 3 <= s.meta.max else s.meta.max
    if s.kind == "float":
        base = s.default if s.default is not None else 0.5
        return base / 2 if base > 1 else base + 0.25 if (s.meta.below is None or base + 0.25 < s.meta.below) else base / 2
    return {"name": "some-name", "stop_at": "\n\n"}.get(s.name, "cpu:x")


@pytest.mark.parametrize("s", USER_SETTINGS, ids=lambda s: s.name)
def test_each_setting_round_trips_through_the_command_line(s):
    config = dataclasses.replace(TrainConfig(), **{s.name: _non_default(s)})
    if s.name == "epochs":
        config.max_steps = 0
    argv = command_for_config(config)
    assert s.flag in argv
    assert train_config_from_args(build_parser().parse_args(argv[1:])) == config


@pytest.mark.parametrize("s", GENERATE_SETTINGS, ids=lambda s: s.name)
def test_each_generation_setting_round_trips_through_the_command_line(s):
    config = dataclasses.replace(SamplingConfig(), **{s.name: _non_default(s)})
    argv = ["generate", "--model", "m", *to_argv(config)]
    assert s.flag in argv
    parsed = expand(from_args(SamplingConfig, build_parser().parse_args(argv)))
    assert parsed == [config]


def test_defaults_make_the_bare_command_and_parse_back():
    assert command_for_config(TrainConfig()) == ["rnnstudio", "train"]
    assert train_config_from_args(build_parser().parse_args(["train"])) == TrainConfig()


@pytest.mark.parametrize("field_name,value", [("hidden_size", 0), ("dropout", 1.0), ("lr", 0.0),
                                               ("lr", float("nan")), ("clip", float("nan")),
                                               ("seed", 10**23), ("tokens", ""), ("hidden_size", "abc")])
def test_out_of_range_values_name_the_setting_in_each_interface(field_name, value):
    config = dataclasses.replace(TrainConfig(), **{field_name: value})
    with pytest.raises(SettingError) as info:
        check(config)
    s = next(x for x in schema(TrainConfig) if x.name == field_name)
    assert s.flag in str(info.value)
    gui_text = render_error(info.value, "gui")
    assert s.label in gui_text and s.flag not in gui_text


def test_resume_keeps_the_model_settings():
    kept = saved_settings()
    assert {"corpus", "cell", "hidden_size", "tokens"} <= set(kept)
    assert "max_steps" not in kept and "lr" not in kept


def test_the_user_guide_shows_the_schemas_tables():
    guide = Path(__file__).resolve().parent.parent / "docs" / "user-guide.md"
    text = guide.read_text(encoding="utf-8")
    fresh = replace_tables(text, {"train": TrainConfig, "generate": SamplingConfig})
    assert fresh == text, "the options tables are out of date: run `python docs/update_options.py`"


def test_the_docs_table_lists_every_flag():
    table = markdown_table(TrainConfig)
    for s in USER_SETTINGS:
        assert f"`{s.flag}" in table
