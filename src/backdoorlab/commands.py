"""CLI commands built from the registry: one command per registered method, its options read
from the config dataclass (names, types, defaults and help from the fields' metadata).

Every method command takes ``--out``, a flag per config field, the common training flags
(``--epochs``, ``--lr``, ``--batch-size``, ``--max-steps``, ``--full``) where the method
trains, ``--config FILE`` and ``--set KEY=VALUE``. Precedence: flags > ``--set`` > the config
file > the defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import declared_by, field_default, field_help, from_dict, load_yaml, yaml_error
from .errors import BackdoorlabError
from .registry import VERBS, Method
from .runs import RunResult

#: flags for the nested ``train`` config: flag -> (dotted key, type, help)
TRAIN_FLAGS: dict[str, tuple[str, type, str]] = {
    "epochs": ("train.epochs", float, "training epochs (train.epochs)"),
    "lr": ("train.learning_rate", float, "learning rate (train.learning_rate)"),
    "batch_size": ("train.batch_size", int, "training rows per step (train.batch_size)"),
    "max_steps": ("train.max_steps", int, "stop after this many steps (train.max_steps)"),
}
SHORT = {"model": "-m", "data": "-d"}


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Options from a YAML or JSON file (a mapping)."""
    if path is None:
        return {}
    import yaml

    try:
        data = load_yaml(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise BackdoorlabError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise BackdoorlabError(f"{path}:{yaml_error(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BackdoorlabError(f"{path}: expected a mapping of options")
    return data


def merge_options(file_opts: dict[str, Any], sets: list[str] | None,
                  flags: dict[str, Any]) -> dict[str, Any]:
    """Precedence: CLI flags > --set > config file > defaults (flags left unset are skipped).
    The file's nested sections (``train: {epochs: 2}``) become dotted keys, so that
    ``--set train.epochs=3`` overrides one key of a section and keeps the others."""
    out = flatten(file_opts)
    for item in sets or []:
        if "=" not in item:
            raise BackdoorlabError(f"option '--set': {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def flatten(opts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``."""
    out: dict[str, Any] = {}
    for key, value in opts.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def cli_type(annotation: Any) -> type:
    """The type a CLI flag reads for a field of type ``annotation`` (lists are read as
    comma-separated text and converted by the config)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return cli_type(args[0])
    if annotation in (bool, int, float):
        return annotation
    return str


def show_default(f: dataclasses.Field) -> str:
    value = field_default(f)
    if dataclasses.is_dataclass(value):
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f" [default: {value}]"


def _param(name: str, kind: type, flag: str, help_text: str, short: str | None = None,
           panel: str | None = None) -> inspect.Parameter:
    names = [flag] + ([short] if short else [])
    if kind is bool:
        names = [f"{flag}/--no-{flag[2:]}"]
    # numbers are read as text and converted by the config, whose errors are one line naming
    # the flag (click's own would print a usage box)
    metavar = {int: "INT", float: "NUMBER"}.get(kind)
    ann = Annotated[(str if metavar else kind) | None, typer.Option(
        *names, help=help_text, show_default=False, rich_help_panel=panel, metavar=metavar)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)


COMMON = {
    "config": inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[Path | None, typer.Option(
                                    "--config", "-c", help="YAML/JSON file of options (flags "
                                    "and --set win).")]),
    "set_": inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[list[str] | None, typer.Option(
                                  "--set", help="KEY=VALUE for any option, e.g. "
                                  "train.learning_rate=1e-3 (repeatable).")]),
    "trust_remote_code": inspect.Parameter(
        "trust_remote_code", inspect.Parameter.KEYWORD_ONLY, default=False,
        annotation=Annotated[bool, typer.Option("--trust-remote-code",
                                                help="Allow the model repo's own Python code "
                                                     "(off).")]),
}


KINDS = {"bool": bool, "int": int, "float": float, "str": str}


def command_spec(config: type, description: str, name: str, *, out_required: bool = True,
                 trains: bool | None = None) -> dict[str, Any]:
    """What a command built from ``config`` shows and reads, as plain data: a flag per field
    (help and default from the field's metadata; nested configs are reached by ``--set``),
    the common training flags when the command trains. :func:`spec_command` builds the command
    from it; ``commands.json`` stores it for every registered command."""
    hints = typing.get_type_hints(config)
    fields = [f for f in dataclasses.fields(config) if f.init]
    top = {f.name for f in fields}
    params: list[dict[str, Any]] = []
    for f in sorted(fields, key=lambda f: declared_by(config, f.name) is not config):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        owner = declared_by(config, f.name)
        params.append({
            "name": f.name, "key": f.name, "kind": cli_type(hints[f.name]).__name__,
            "flag": "--" + str(f.metadata.get("flag", f.name)).replace("_", "-"),
            "help": field_help(f) + show_default(f), "short": SHORT.get(f.name),
            "panel": None if owner is config else PANELS.get(owner.__name__, "Shared options")})
    trains = "train" in top if trains is None else trains
    if trains:
        params += [{"name": flag, "key": key, "kind": kind.__name__,
                    "flag": "--" + flag.replace("_", "-"), "help": text, "short": None,
                    "panel": "Training"}
                   for flag, (key, kind, text) in TRAIN_FLAGS.items() if flag not in top]
    return {"name": name, "description": description, "out_required": out_required,
            "trains": trains, "params": params}


def spec_command(spec: dict[str, Any], resolve: Callable[[], tuple[type, Any]]) -> Any:
    """A typer command function from :func:`command_spec`'s data: its flags, ``--out``,
    ``--config``, ``--set`` and ``--trust-remote-code``. ``resolve()`` gives the config class
    and the runner, and is called only when the command runs (so ``--help`` imports no method
    code); the command builds the config (flags > --set > file > defaults), calls
    ``runner(cfg, out, trust_remote_code=...)`` and prints the metrics it returns."""
    name, out_required = spec["name"], spec["out_required"]
    out_help = "Run directory to write." if out_required else "Write metrics.json here."
    params = [inspect.Parameter(
        "out", inspect.Parameter.KEYWORD_ONLY,
        **({} if out_required else {"default": None}),
        annotation=Annotated[Path if out_required else Path | None,
                             typer.Option("--out", "-o", help=out_help)])]
    keys: dict[str, str] = {}
    for p in spec["params"]:
        params.append(_param(p["name"], KINDS[p["kind"]], p["flag"], p["help"], p["short"],
                             p["panel"]))
        keys[p["name"]] = p["key"]
    if spec["trains"]:
        params.append(inspect.Parameter(
            "full", inspect.Parameter.KEYWORD_ONLY, default=False,
            annotation=Annotated[bool, typer.Option(
                "--full", help="Full fine-tuning instead of LoRA (train.lora=false).",
                rich_help_panel="Training")]))
    params += list(COMMON.values())

    def command(**kw: Any) -> None:
        out = kw.pop("out")
        flags = {keys[k]: v for k, v in kw.items() if k in keys}
        if kw.get("full"):
            flags["train.lora"] = False
        try:
            config, runner = resolve()
            opts = merge_options(load_config_file(kw["config"]), kw["set_"], flags)
            cfg = from_dict(config, opts, where=name)
            res = runner(cfg, out, trust_remote_code=kw["trust_remote_code"])
        except BackdoorlabError as exc:  # name the flag the user typed
            raise BackdoorlabError(re.sub(
                r"option '(\w+)'", lambda m: f"option '--{m.group(1).replace('_', '-')}'"
                if m.group(1) in keys else m.group(0), str(exc))) from None
        metrics = res.metrics if isinstance(res, RunResult) else res
        typer.echo(json.dumps(headline(metrics), indent=2, default=str))
        if out is not None:
            typer.echo(f"run directory: {out}", err=True)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = spec["description"]
    command.__name__ = name.replace(" ", "_").replace("-", "_")
    return command


def method_spec(method: Method) -> dict[str, Any]:
    """The command data of a registered method (``backdoorlab attack poison``, ...)."""
    return command_spec(method.config, method.description + ".",
                        f"{VERBS[method.family]} {method.name}")


#: help panels for fields a method inherits from a shared config
PANELS = {"SuiteOptions": "Evaluation", "BaselineSuiteOptions": "Evaluation",
          "ScanConfig": "Suspect and probe prompts", "AnalysisConfig": "Suspect and prompts",
          "DefenseConfig": "Suspect and clean data", "CrowConfig": "CROW"}


#: nested results left out of the printed summary (they are in metrics.json)
BULKY = {"before", "after", "sweep", "intervention", "top_answers", "curve", "resources",
         "entropy_gap_distribution", "baseline_entropy_gap_distribution", "details"}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a method command prints: its metrics without the bulky nested parts, floats
    rounded to 4 places."""
    def tidy(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, dict):
            return {k: tidy(x) for k, x in v.items()}
        if isinstance(v, list) and all(isinstance(x, float) for x in v):
            return [round(x, 4) for x in v]
        return v
    return {k: tidy(v) for k, v in metrics.items() if k not in BULKY}


class LazyGroup(typer.core.TyperGroup):
    """A command group whose commands (beyond those declared on it) come from ``load()``, a
    mapping of name -> command function, called only when the group is used, so that
    ``backdoorlab --help`` imports no method and no model code."""

    def load(self) -> dict[str, Any]:
        return {}

    def live(self) -> dict[str, Any] | None:
        """The commands as the code registers them, when ``load()`` reads a stored index:
        asked for a name the index lacks (a method added since it was written)."""
        return None

    def _loaded(self) -> dict[str, Any]:
        if not hasattr(self, "_cache"):
            self._cache = self.load()
        return self._cache

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._loaded()))

    def get_command(self, ctx: Any, name: str) -> Any:
        cmd = super().get_command(ctx, name)
        if cmd is None and name not in self._loaded() and not getattr(self, "_live", False):
            known = sorted(set(super().list_commands(ctx)) | set(self._loaded()))
            close = difflib.get_close_matches(name, known, n=1)
            if close:  # a misspelt command: say so without loading every method
                ctx.fail(f"No such command {name!r} (did you mean {close[0]!r}?).")
            self._live = True
            self._cache = self.live() or self._cache
        if cmd is not None or name not in self._loaded():
            return cmd
        sub = typer.Typer(add_completion=False)
        sub.command(name)(self._loaded()[name])
        return typer.main.get_command(sub)


def lazy_group(load: Any, live: Any = None) -> type[LazyGroup]:
    """A :class:`LazyGroup` class whose commands come from ``load()`` (and, for a name it
    lacks, from ``live()``)."""
    return type("LoadedGroup", (LazyGroup,), {"load": lambda self: load(),
                                              "live": lambda self: live() if live else None})


INDEX = Path(__file__).with_name("commands.json")


def stored_specs(group: str) -> dict[str, dict[str, Any]] | None:
    """The command data of ``group`` (a family, or ``eval``) as ``commands.json`` stores it,
    or None when the file or the group is missing. The file is written by
    ``python -m backdoorlab.commands`` and a test keeps it equal to what the registry gives."""
    try:
        return json.loads(INDEX.read_text("utf-8"))[group]
    except (OSError, ValueError, KeyError):
        return None


def live_specs(group: str) -> dict[str, dict[str, Any]]:
    """The command data of ``group`` (a family, or ``eval``) as the code registers it: what
    ``commands.json`` stores, computed by importing every method of the group."""
    from .catalog import all_methods, evaluations

    if group == "eval":
        return {name: command_spec(cls, text, f"eval {name}", out_required=False, trains=False)
                for name, (cls, _, text) in evaluations().items()}
    return {m.name: method_spec(m) for m in all_methods(group)}


def _resolver(group: str, name: str) -> Callable[[], tuple[type, Any]]:
    """The config class and runner of command ``name`` of ``group``, imported when called."""
    def resolve() -> tuple[type, Any]:
        from .catalog import evaluations, get, run_evaluation

        if group == "eval":
            return evaluations()[name][0], functools.partial(run_evaluation, name)
        method = get(group, name)
        return method.config, method.run
    return resolve


def group_commands(group: str, *, live: bool = False) -> dict[str, Any]:
    """The commands of ``group`` (a family, or ``eval``), built from ``commands.json`` (from
    the registry when ``live`` or when the file lacks the group); each imports its method
    only when it runs."""
    specs = None if live else stored_specs(group)
    if specs is None:
        specs = live_specs(group)
    return {name: spec_command(spec, _resolver(group, name)) for name, spec in specs.items()}


def family_group(family: str, extra: Any = None) -> type[LazyGroup]:
    """The group of a method family: one command per registered method, and the command
    functions ``extra()`` returns (name -> function). The commands are built from
    ``commands.json``, so listing them or asking one for ``--help`` imports no method; the
    method's file is imported when its command runs."""
    def commands(live: bool) -> dict[str, Any]:
        return {**group_commands(family, live=live), **(extra() if extra else {})}
    return lazy_group(lambda: commands(False), lambda: commands(True))


def command_index() -> dict[str, dict[str, dict[str, Any]]]:
    """Every registered command as plain data (:func:`command_spec`): family -> method ->
    command, and ``eval`` -> evaluation -> command. Stored as ``commands.json`` beside the
    package's code, so that the CLI lists commands and prints their help without importing
    them."""
    from .registry import FAMILIES

    return {group: live_specs(group) for group in (*FAMILIES, "eval")}


def write_command_index(path: Path | None = None) -> Path:
    """Write :func:`command_index` to ``commands.json`` (or ``path``)."""
    from .io import atomic_write_text

    path = path or INDEX
    atomic_write_text(path, json.dumps(command_index(), indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":  # python -m backdoorlab.commands: refresh commands.json
    print(write_command_index())
