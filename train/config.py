"""Typed configs for the command-line tools: dataclass defaults, then a YAML file, then flags.

Every field of a config dataclass becomes a flag ``--field-name`` (plus any ``metadata["aliases"]``)
whose help is the field's ``metadata["help"]``; a ``dict`` field takes a JSON object
(``--env-kwargs '{"max_steps": 50}'``). ``--config FILE.yaml`` sets fields from a YAML mapping (keys are field
names, with ``_`` or ``-``); flags given on the command line override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["add_config_arguments", "config_from_args", "load_yaml", "field"]

C = TypeVar("C")


def field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a help string (shown by ``--help``)."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[type, bool, bool]:
    """(element type, optional, is a sequence) of a field annotation such as ``int | None`` or ``tuple[str, ...]``."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return typing.get_args(annotation)[0], optional, True
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0]), optional, False
    return annotation, optional, False


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"expected a JSON object such as '{{\"max_steps\": 50}}', got {text!r} ({error})"
        raise argparse.ArgumentTypeError(message) from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"max_steps\": 50}}', got {text!r}")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` and one flag per field of the dataclass ``cls`` (defaults left unset, so only given flags override)."""
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file with values for the options below (flags override it)"
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        element, _, is_sequence = _base_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default_text = f"default: {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default_text = f"default: {f.default_factory()!r}"
        else:
            default_text = "required"
        help_text = f"{f.metadata.get('help', '')} ({default_text})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        if choices:
            kwargs["choices"] = choices
        if element is bool:
            kwargs["type"] = _parse_bool
            kwargs["metavar"] = "{true,false}"
        elif typing.get_origin(element) is dict or element is dict:
            kwargs["type"] = _parse_json_object
            kwargs["metavar"] = "JSON"
        else:
            kwargs["type"] = element
        if is_sequence:
            kwargs["nargs"] = "+"
        parser.add_argument(_flag(f.name), *f.metadata.get("aliases", ()), **kwargs)


def load_yaml(path: Path, cls: type) -> dict[str, Any]:
    """Field values from a YAML mapping; unknown keys raise ValueError naming them and the valid ones."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of option names to values, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config file {str(path)!r} has unknown options {unknown}; valid options: {sorted(names)}")
    return values


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Build ``cls`` from its defaults, then ``args.config`` (YAML), then the flags present in ``args``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(load_yaml(args.config, cls))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(_strip_optional(hints[name])) is tuple:
            values[name] = tuple(value)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values
    ]  # type: ignore[misc]
    if missing:
        raise ValueError(f"missing required options: {', '.join(_flag(m) for m in missing)}")
    return cls(**values)


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation
