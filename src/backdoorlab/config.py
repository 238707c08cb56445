"""Dataclass configs: build from dicts that may come from YAML or the CLI, reject unknown keys.

Each method's config is a dataclass whose ``__post_init__`` checks its values (naming the bad
one); :func:`from_dict` adds the check for unknown keys with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import BackdoorlabError, did_you_mean

C = TypeVar("C")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Best-effort conversion of strings from the CLI to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except BackdoorlabError:
                continue
        raise BackdoorlabError(f"option {key!r}: cannot read {value!r} as {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise BackdoorlabError(f"option {key!r}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise BackdoorlabError(f"option {key!r}: expected a number, got {value!r}")
        try:
            out = annotation(value)
        except (TypeError, ValueError):
            raise BackdoorlabError(
                f"option {key!r}: expected {annotation.__name__}, got {value!r}"
            ) from None
        if annotation is int and isinstance(value, float) and value != out:
            raise BackdoorlabError(f"option {key!r}: expected an integer, got {value!r}")
        if annotation is float and not math.isfinite(out):
            raise BackdoorlabError(f"option {key!r}: expected a finite number, got {value!r}")
        return out
    if annotation is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str | int | float):
            raise BackdoorlabError(f"option {key!r}: expected text, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise BackdoorlabError(f"option {key!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) if inner is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    return value


def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = "config") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys get a did-you-mean error.

    Nested dataclass fields take a mapping or dotted keys (``train.learning_rate``)."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    nested: dict[str, dict[str, Any]] = {}
    for key in [k for k in data if "." in k]:
        head, rest = key.split(".", 1)
        nested.setdefault(head.replace("-", "_"), {})[rest] = data.pop(key)
    kwargs = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm not in fields:
            raise BackdoorlabError(
                f"{where}: unknown option {key!r}{did_you_mean(norm, fields)}; "
                f"valid options: {', '.join(sorted(fields))}"
            )
        if dataclasses.is_dataclass(hints[norm]):
            if not isinstance(value, Mapping):
                raise BackdoorlabError(f"{where}: option {key!r} expects a mapping")
            nested.setdefault(norm, {}).update(value)
            continue
        kwargs[norm] = _coerce(value, hints[norm], key)
        if norm == "seed" and kwargs[norm] is not None and kwargs[norm] < 0:
            raise BackdoorlabError(f"{where}: option {key!r}: must be >= 0, got {value!r}")
    # one seed: a config's ``seed`` also seeds its training (LoRA initialisation, data
    # order) unless ``train.seed`` is given
    if ("seed" in kwargs and "train" in fields and dataclasses.is_dataclass(hints["train"])
            and "seed" not in nested.get("train", {})):
        nested.setdefault("train", {})["seed"] = kwargs["seed"]
    for key, sub in nested.items():
        if key not in fields or not dataclasses.is_dataclass(hints[key]):
            raise BackdoorlabError(
                f"{where}: unknown option {key!r}{did_you_mean(key, fields)}; "
                f"valid options: {', '.join(sorted(fields))}"
            )
        # start from the parent's own default (e.g. a Trainer schedule tuned for that
        # command), not the nested class's generic one
        f = fields[key]
        base = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                else f.default if f.default is not dataclasses.MISSING else None)
        start = to_dict(base) if dataclasses.is_dataclass(base) else {}
        try:
            kwargs[key] = from_dict(hints[key], {**start, **sub}, where=f"{where}.{key}")
        except BackdoorlabError as exc:  # name the option as the user writes it: train.epochs
            raise BackdoorlabError(re.sub(r"option '(\w+)'", f"option '{key}.\\1'", str(exc),
                                          count=1)) from None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise BackdoorlabError(f"{where}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config (every default filled in) as plain JSON-able data."""
    return dataclasses.asdict(cfg)


def check(cond: bool, option: str, message: str) -> None:
    """Raise a one-line error naming ``option`` unless ``cond`` holds (for ``__post_init__``)."""
    if not cond:
        raise BackdoorlabError(f"option {option!r}: {message}")


def opt(default: Any, help: str, *, flag: str | None = None, at_least: float | None = None
        ) -> Any:
    """A config field with its default and its help text (the CLI's ``--help``, the config
    reference in ``docs/config.md``): ``epochs: float = opt(3.0, "passes over the data")``.
    A mutable default is given as a factory: ``opt(lambda: [0.1, 0.2], "...")``; ``flag``
    names the CLI flag when it is not the field's name (``evaluate`` -> ``--eval``);
    ``at_least`` is the smallest value the option takes (None passes only where the option's
    type admits it, ``X | None``), checked by :func:`check_bounds`."""
    meta = {"help": help, **({"flag": flag} if flag else {}),
            **({"at_least": at_least} if at_least is not None else {})}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_bounds(obj: Any) -> None:
    """Every option of the config ``obj`` declared with ``at_least`` must be at least that;
    otherwise one line naming it. The root config classes call it first in
    ``__post_init__``, so it covers the options their subclasses add."""
    for f in dataclasses.fields(obj):
        bound = f.metadata.get("at_least")
        if bound is None:
            continue
        value = getattr(obj, f.name)
        if value is None and "None" in str(f.type):
            continue
        check(isinstance(value, (int, float)), f.name, f"must be a number >= {bound}, "
              f"got {value!r}")
        check(value >= bound, f.name, f"must be >= {bound}, got {value}")


def field_default(f: dataclasses.Field) -> Any:
    """A config field's default value (built by its factory when it has one)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def field_help(f: dataclasses.Field) -> str:
    """A config field's help text ('' if it has none), with its bound where it has one."""
    bound = f.metadata.get("at_least")
    return str(f.metadata.get("help", "")) + (f"; at least {bound}" if bound is not None else "")


def check_choice(value: str, choices: Any, option: str) -> None:
    """``value`` must be one of ``choices``; otherwise one line naming ``option`` with a
    did-you-mean."""
    if value not in choices:
        raise BackdoorlabError(f"option {option!r}: {value!r} is not one of "
                               f"{', '.join(choices)}{did_you_mean(value, choices)}")


def declared_by(cls: type, name: str) -> type:
    """The class in ``cls``'s hierarchy that declares field ``name``."""
    for klass in reversed(cls.__mro__):
        if name in getattr(klass, "__annotations__", {}):
            return klass
    return cls


def _unique_key_loader() -> type:
    """A YAML SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the
    last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def load_yaml(text: str) -> Any:
    """YAML (or JSON) text as data, with a key given twice in one mapping refused."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)


def yaml_error(exc: Exception) -> str:
    """``LINE: invalid YAML (what)`` for a YAML error, as the one-line messages use it."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    return (f"{mark.line + 1 if mark else '?'}: invalid YAML"
            + (f" ({problem})" if problem else ""))
