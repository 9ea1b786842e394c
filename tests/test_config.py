"""Configs: dataclass defaults < YAML file < command-line flags, with clear errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from episodic_memory.train.config import add_config_arguments, config_from_args, field


@dataclass
class Example:
    data: str = field("data", "a path")
    steps: int = field(10, "a count")
    lr: float = field(1e-4, "a rate")
    evaluate: bool = field(True, "a switch")
    model: Literal["dkm", "km"] = field("dkm", "a choice")
    envs: tuple[str, ...] = field(("a", "b"), "a list")
    policy: str | None = field(None, "optional")


def parse(argv: list[str]) -> Example:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    return config_from_args(Example, parser.parse_args(argv))


def test_defaults():
    assert parse([]) == Example()


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 50\nlr: 0.001\nmodel: km\nenvs: [x, y, z]\nevaluate: false\n")
    config = parse(["--config", str(path), "--steps", "7", "--policy", "p.zip"])
    assert config == Example(steps=7, lr=0.001, model="km", envs=("x", "y", "z"), evaluate=False, policy="p.zip")


def test_flag_types_and_choices():
    config = parse(["--evaluate", "false", "--envs", "q", "r", "--lr", "3e-4"])
    assert config.evaluate is False and config.envs == ("q", "r") and config.lr == pytest.approx(3e-4)
    with pytest.raises(SystemExit):
        parse(["--model", "vae"])
    with pytest.raises(SystemExit):
        parse(["--steps", "many"])


def test_unknown_yaml_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 5\n")
    with pytest.raises(ValueError, match=r"unknown options \['stepz'\]; valid options"):
        parse(["--config", str(path)])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse(["--config", str(tmp_path / "none.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        parse(["--config", str(bad)])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        parse(["--config", str(listy)])


def test_required_fields_are_listed_and_enforced():
    @dataclass
    class WithRequired:
        out: str
        steps: int = field(1, "a count")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, WithRequired)
    assert "(required)" in parser.format_help()
    with pytest.raises(ValueError, match="missing required options: --out"):
        config_from_args(WithRequired, parser.parse_args([]))
    assert config_from_args(WithRequired, parser.parse_args(["--out", "x"])) == WithRequired(out="x")
