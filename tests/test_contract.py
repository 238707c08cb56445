"""The bad-input contract over every command, with generated cases: for every registered method
and every evaluation, a value that cannot be right for one of its numeric or true/false options
(given as a flag or by --set, nested training options included) ends in one line on stderr
naming the option, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import string
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backdoorlab.catalog import all_methods, evaluations
from backdoorlab.cli import main
from backdoorlab.errors import BackdoorlabError
from backdoorlab.registry import VERBS
from backdoorlab.training import TrainConfig

COMMANDS = ([(VERBS[m.family], m.name, m.config) for m in all_methods()]
            + [("eval", name, cls) for name, (cls, _, _) in evaluations().items()])
BOOL_WORDS = {"1", "0", "true", "false", "yes", "no", "on", "off", "none", "null"}


def scalar_kind(annotation: object) -> type | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (bool, int, float) else None


def options(cls: type) -> list[tuple[str, type, str | None]]:
    """(dotted key, kind, CLI flag or None) of every numeric or true/false option."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += [(f"{f.name}.{k}", kind, None) for k, kind, _ in options(hints[f.name])]
        elif (kind := scalar_kind(hints[f.name])) is not None:
            flag = "--" + str(f.metadata.get("flag", f.name)).replace("_", "-")
            out.append((f.name, kind, flag))
    return out


CASES = [(verb, name, key, kind, flag) for verb, name, cls in COMMANDS
         for key, kind, flag in options(cls)]
letters = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8).filter(
    lambda s: s.lower() not in BOOL_WORDS)


def bad_value(kind: type) -> st.SearchStrategy[str]:
    if kind is bool:
        return st.one_of(letters, st.sampled_from(["2", "-1", "yess", "tru"]))
    numbers = st.one_of(letters.filter(lambda s: s.lower().lstrip("+-") not in
                                       ("inf", "infinity", "nan")),
                        st.sampled_from(["1,5", "1e3x", "0x10", "", "--1"]))
    if kind is float:
        return st.one_of(numbers, st.sampled_from(["nan", "inf", "-inf", "Infinity", "NaN"]))
    return st.one_of(numbers, st.sampled_from(["1.5", "nan", "inf", "2.25"]))


def test_the_cases_cover_every_command():
    covered = {(verb, name) for verb, name, *_ in CASES}
    assert covered == {(verb, name) for verb, name, _ in COMMANDS}
    assert len(CASES) > 150
    assert any(key.startswith("train.") for _, _, key, _, _ in CASES)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_refuses_generated_bad_values(data, tmp_path):
    verb, name, key, kind, flag = data.draw(st.sampled_from(CASES))
    value = data.draw(bad_value(kind))
    as_flag = flag is not None and kind is not bool and data.draw(st.booleans())
    out = tmp_path / f"out-{verb}-{name}"
    argv = [verb, name, "--out", str(out)] + (
        [f"{flag}={value}"] if as_flag else ["--set", f"{key}={value}"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(SystemExit) as exc:
        main(argv)
    text = err.getvalue()
    assert exc.value.code == 2, (argv, text)
    assert text.count("\n") == 1 and "Traceback" not in text, (argv, text)
    # the option is named as a flag (--mcq-limit) or as a key (train.epochs)
    assert (flag and flag in text) or f"'{key}'" in text, (argv, text)
    assert not out.exists(), argv


def bounded(cls: type, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, bound) of every option declared with ``at_least``, nested ones included."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += bounded(hints[f.name], f"{prefix}{f.name}.")
        elif "at_least" in f.metadata:
            out.append((prefix + f.name, f.metadata["at_least"]))
    return out


BOUNDED = [(verb, name, cls, key, bound) for verb, name, cls in COMMANDS
           for key, bound in bounded(cls)]


def test_every_bounded_option_is_checked_on_every_command(tmp_path):
    """A value below an option's declared bound is refused, both where the config is built
    directly (the Python API: so every root config calls check_bounds) and on the command line
    (one line naming the option, exit 2, nothing written)."""
    assert len(BOUNDED) > 60
    for verb, name, cls, key, bound in BOUNDED:
        below = bound - 1 if isinstance(bound, int) else bound - 0.5
        head, _, leaf = key.rpartition(".")
        owner = typing.get_type_hints(cls)[head] if head else cls  # train.*: built on its own
        with pytest.raises(BackdoorlabError, match=f"option '{leaf}': must be >= {bound}"):
            owner(**{leaf: below})
        # from Python a value of another type is refused too, and None where the type has none
        wrong = ["3"] + ([] if "None" in str(typing.get_type_hints(owner)[leaf]) else [None])
        for value in wrong:
            with pytest.raises(BackdoorlabError, match=f"option '{leaf}': must be a number"):
                owner(**{leaf: value})
        out = tmp_path / f"out-{verb}-{name}"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                pytest.raises(SystemExit) as exc:
            main([verb, name, "--out", str(out), "--set", f"{key}={below}"])
        text = err.getvalue()
        assert exc.value.code == 2 and text.count("\n") == 1, (verb, name, key, text)
        named = leaf in text or leaf.replace("_", "-") in text  # the key, or its flag
        assert named and f">= {bound}" in text, (verb, name, key, text)
        assert not out.exists()


def test_the_suite_counts_its_cases():
    """How many distinct (command, option) pairs the generated cases draw from; BENCHMARKS.md
    and the README state the suite's size."""
    assert len(CASES) >= len(COMMANDS) * 3
    assert isinstance(TrainConfig().epochs, float)
    assert Path(__file__).is_file()
