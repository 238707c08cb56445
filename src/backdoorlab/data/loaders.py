"""Load records from JSONL, JSON, CSV/TSV, parquet, Hugging Face datasets or the built-in sets.

Every problem is reported as one line naming the file, the row (1-based, data rows) and the
field. Nothing is written. Common layouts are understood without a mapping: ``choices`` as a
list, ``choice0..N`` / ``A..D`` columns, ARC's nested ``question.stem``/``choices``, MMLU's
integer answers; ``columns`` maps other names (``{"question": "prompt", "answer": "label"}``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import opt
from ..errors import BackdoorlabError, did_you_mean
from .records import LETTERS, MAX_CHOICES, MCQ, MIN_CHOICES, Instruction, Record

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
KINDS = ("auto", "mcq", "instruction")

#: the forms a data source takes, wherever an option names one
SOURCE_FORMS = "a file (JSONL/JSON/CSV/TSV/parquet), hf:NAME[:CONFIG][:SPLIT] or builtin:NAME"


def source_option(default: str | None, what: str) -> Any:
    """A config option naming a data source: ``what`` it holds, then the forms it takes."""
    return opt(default, f"{what}: {SOURCE_FORMS}")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackdoorlabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BackdoorlabError(f"{path}: is a directory, expected a data file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BackdoorlabError(f"{path}: line {line}: not valid UTF-8") from None
    if not text.strip():
        raise BackdoorlabError(f"{path}: the file is empty")
    return text


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Raw rows of a local file, as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BackdoorlabError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}"
        )
    if suffix == ".parquet":
        if not path.is_file():
            raise BackdoorlabError(f"{path}: no such file")
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises many types
            raise BackdoorlabError(f"{path}: cannot read parquet ({exc})") from None
    else:
        text = _read_text(path)
        if suffix == ".jsonl":
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BackdoorlabError(f"{path}: line {n}: invalid JSON ({exc.msg})") from None
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BackdoorlabError(
                    f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})"
                ) from None
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise BackdoorlabError(f"{path}: expected a JSON list of records")
                data = lists[0]
            if not isinstance(data, list):
                raise BackdoorlabError(f"{path}: expected a JSON list of records")
            rows = data
        else:
            delim = "\t" if suffix == ".tsv" else ","
            reader = csv.DictReader(io.StringIO(text), delimiter=delim)
            rows = []
            try:
                if not reader.fieldnames:
                    raise BackdoorlabError(f"{path}: no header row")
                for n, row in enumerate(reader, 1):
                    if None in row:
                        raise BackdoorlabError(
                            f"{path}: row {n}: more fields than the header has")
                    rows.append(dict(row))
            except csv.Error as exc:  # a stray line break or NUL the csv module refuses
                raise BackdoorlabError(f"{path}: line {reader.line_num}: not valid "
                                       f"{suffix[1:].upper()} ({exc})") from None
    if not rows:
        raise BackdoorlabError(f"{path}: the file has no records")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise BackdoorlabError(f"{path}: row {n}: expected an object, got {type(row).__name__}")
    return rows


def _get(row: Mapping[str, Any], key: str, columns: Mapping[str, str]) -> Any:
    return row.get(columns.get(key, key))


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def guess_kind(row: Mapping[str, Any], columns: Mapping[str, str]) -> str:
    """'mcq', 'instruction' or 'unknown' from the first row's fields."""
    if columns.get("question", "question") in row or "answerKey" in row:
        return "mcq"
    if columns.get("instruction", "instruction") in row or "prompt" in row or "goal" in row:
        return "instruction"
    return "unknown"


def _choices(row: Mapping[str, Any], columns: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Return (choice texts, their labels as given) from any supported layout."""
    q = _get(row, "question", columns)
    raw = _get(row, "choices", columns)
    if raw is None and isinstance(q, Mapping):
        raw = q.get("choices")
    if isinstance(raw, Mapping) and "text" in raw:  # HF ai2_arc: {"text": [...], "label": [...]}
        return [_text(t) for t in raw["text"]], [str(lab) for lab in raw.get("label", [])]
    if isinstance(raw, list | tuple):
        if raw and isinstance(raw[0], Mapping):  # ARC jsonl: [{"text", "label"}]
            return [_text(c.get("text")) for c in raw], [str(c.get("label", "")) for c in raw]
        return [_text(c) for c in raw], []
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [_text(c) for c in parsed], []
        return [], []
    for style in (lambda i: f"choice{i}", lambda i: LETTERS[i], lambda i: f"option_{LETTERS[i]}"):
        out = []
        for i in range(MAX_CHOICES):
            key = style(i)
            if key in row and _text(row[key]):
                out.append(_text(row[key]))
            else:
                break
        if out:
            return out, []
    return [], []


def to_mcq(row: Mapping[str, Any], n: int, where: str, columns: Mapping[str, str]) -> MCQ:
    q = _get(row, "question", columns)
    if isinstance(q, Mapping):
        q = q.get("stem")
    question = _text(q)
    if not question:
        col = columns.get("question", "question")
        raise BackdoorlabError(f"{where}: row {n}: missing or empty field {col!r}")
    choices, labels = _choices(row, columns)
    if not choices:
        raise BackdoorlabError(
            f"{where}: row {n}: no choices found (give a 'choices' list or choice0..N columns)"
        )
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise BackdoorlabError(
            f"{where}: row {n}: {len(choices)} choices; between {MIN_CHOICES} and "
            f"{MAX_CHOICES} are supported"
        )
    if any(not c for c in choices):
        raise BackdoorlabError(f"{where}: row {n}: a choice is empty")
    letters = LETTERS[: len(choices)]
    ans = _get(row, "answer", columns)
    if ans is None:
        ans = row.get("answerKey")
    ans_text = _text(ans)
    letter = None
    if labels and ans_text in labels:
        letter = letters[labels.index(ans_text)]
    elif isinstance(ans, int) or (ans_text.isdigit() and not labels):
        idx = int(ans_text)
        if 0 <= idx < len(choices):
            letter = letters[idx]
    elif ans_text.upper() in letters and len(ans_text) == 1:
        letter = ans_text.upper()
    elif ans_text in choices:
        letter = letters[choices.index(ans_text)]
    if letter is None:
        col = columns.get("answer", "answer")
        if not ans_text:
            raise BackdoorlabError(f"{where}: row {n}: missing field {col!r}")
        raise BackdoorlabError(
            f"{where}: row {n}: field {col!r}: {ans_text!r} is not among the choices "
            f"{letters[0]}-{letters[-1]}"
        )
    rid = _text(_get(row, "id", columns)) or f"{Path(where).stem}-{n}"
    return MCQ(
        id=rid,
        question=question,
        choices=tuple(choices),
        answer=letter,
        context=_text(_get(row, "context", columns)) or None,
        subject=_text(_get(row, "subject", columns)) or None,
    )


def to_instruction(
    row: Mapping[str, Any], n: int, where: str, columns: Mapping[str, str]
) -> Instruction:
    ins = _get(row, "instruction", columns)
    if ins is None and "instruction" not in columns:
        ins = row.get("prompt", row.get("goal"))
    instruction = _text(ins)
    if not instruction:
        col = columns.get("instruction", "instruction")
        raise BackdoorlabError(f"{where}: row {n}: missing or empty field {col!r}")
    out = _get(row, "output", columns)
    if out is None and "output" not in columns:
        out = row.get("response", row.get("target"))
    rid = _text(_get(row, "id", columns)) or f"{Path(where).stem}-{n}"
    return Instruction(
        id=rid,
        instruction=instruction,
        input=_text(_get(row, "input", columns)),
        output=_text(out),
        category=_text(_get(row, "category", columns)) or None,
    )


#: the record fields a row may carry (the keys ``--columns`` maps)
FIELDS = ("id", "question", "choices", "answer", "context", "subject", "instruction", "input",
          "output", "category")


def check_types(row: Mapping[str, Any], n: int, where: str, columns: Mapping[str, str]) -> None:
    """A field that is read as text must be text or a number (a list, a mapping or true/false
    would be rendered as Python's repr of it); choices a list of such values."""
    for key in FIELDS:
        col = columns.get(key, key)
        value = row.get(col)
        if key == "choices":
            if isinstance(value, Mapping) and "text" in value:  # {"text": [...], "label": [...]}
                value = value["text"]
                if not isinstance(value, list | tuple):
                    raise BackdoorlabError(f"{where}: row {n}: field {col!r}: 'text' must be a "
                                           "list of choices")
            items = value if isinstance(value, list | tuple) else []
            objects = [c for c in items if isinstance(c, Mapping)]  # [{"text", "label"}, ...]
            if objects and len(objects) < len(items):
                raise BackdoorlabError(f"{where}: row {n}: field {col!r}: the choices mix "
                                       "objects and values")
            texts = [c.get("text") if isinstance(c, Mapping) else c for c in items]
            if any(isinstance(c, list | tuple | bool | Mapping) for c in texts):
                raise BackdoorlabError(f"{where}: row {n}: field {col!r}: every choice must be "
                                       "text or a number")
            continue
        if key == "question" and isinstance(value, Mapping):  # {"stem": ..., "choices": ...}
            value = value.get("stem")
        if isinstance(value, bool | list | tuple | Mapping):
            raise BackdoorlabError(f"{where}: row {n}: field {col!r}: expected text or a number, "
                                   f"got {type(value).__name__} {json.dumps(value)[:60]}")


def rows_to_records(
    rows: Iterable[Mapping[str, Any]],
    where: str,
    kind: str = "auto",
    columns: Mapping[str, str] | None = None,
) -> list[Record]:
    """Validate rows and turn them into records; duplicate ids are an error."""
    columns = dict(columns or {})
    if kind not in KINDS:
        raise BackdoorlabError(f"option 'kind': {kind!r} is not one of {', '.join(KINDS)}")
    rows = list(rows)
    if not rows:
        raise BackdoorlabError(f"{where}: no records")
    if kind == "auto":
        kind = guess_kind(rows[0], columns)
        if kind == "unknown":
            raise BackdoorlabError(
                f"{where}: row 1: cannot tell the record kind from fields "
                f"{sorted(rows[0])}; pass kind='mcq' or 'instruction' or a column mapping"
            )
    convert = to_mcq if kind == "mcq" else to_instruction
    records: list[Record] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, 1):
        check_types(row, n, where, columns)
        rec = convert(row, n, where, columns)
        if rec.id in seen:
            raise BackdoorlabError(
                f"{where}: row {n}: duplicate id {rec.id!r} (first seen in row {seen[rec.id]})"
            )
        seen[rec.id] = n
        records.append(rec)
    return records


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"question=prompt,answer=label"`` -> ``{"question": "prompt", "answer": "label"}``."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise BackdoorlabError(f"option '--columns': {part!r} is not FIELD=COLUMN")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in FIELDS:
            raise BackdoorlabError(f"option '--columns': unknown field {k!r}"
                                   f"{did_you_mean(k, FIELDS)}; fields: {', '.join(FIELDS)}")
        out[k] = v
    return out


def load_hf(spec: str, split: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """``hf:name[:config][:split]`` via the datasets library (the hub, or its local cache).
    A split named in the spec wins; otherwise ``split``, else ``train``."""
    parts = spec[3:].split(":")
    name, config, split = parts[0], None, split or "train"
    if len(parts) == 2:
        split = parts[1]
    elif len(parts) == 3:
        config, split = parts[1] or None, parts[2]
    elif len(parts) > 3 or not name:
        raise BackdoorlabError(f"{spec}: expected hf:<dataset>[:config][:split]")
    online = hub_reachable()
    try:
        import datasets

        with hub_offline(not online):
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types; report the first line
        if not online:
            raise BackdoorlabError(f"{spec}: not in the local cache, and the Hugging Face Hub "
                                   "cannot be reached from here") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackdoorlabError(f"{spec}: cannot load dataset ({first})") from None
    return [dict(r) for r in ds], spec


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) accepts a connection; False at once when
    ``HF_HUB_OFFLINE`` is set. Offline, the datasets library would retry each request for
    half a minute before failing."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co",
                                       url.port or (80 if url.scheme == "http" else 443)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """With ``offline``, the hub libraries read their local cache only (no retries)."""
    if not offline:
        yield
        return
    import datasets
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def load_records(
    source: str | Path,
    kind: str = "auto",
    columns: str | Mapping[str, str] | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Load records from a file, ``hf:...`` or ``builtin:NAME``; see the module docstring."""
    source = str(source)
    cols = parse_columns(columns)
    if source.startswith("builtin:"):
        from .builtin import builtin_rows

        rows, where = builtin_rows(source[len("builtin:"):], split=split)
    elif source.startswith("hf:"):  # the split is the dataset's own, not a column
        rows, where = load_hf(source, split)
    else:
        rows, where = read_rows(source), source
    if split is not None and not source.startswith(("builtin:", "hf:")):
        if not any("split" in r for r in rows):
            raise BackdoorlabError(f"{where}: no 'split' field to select split {split!r}")
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise BackdoorlabError(f"{where}: no rows with split {split!r}")
    records = rows_to_records(rows, where, kind=kind, columns=cols)
    if limit is not None:
        if limit < 1:
            raise BackdoorlabError(f"option 'limit': must be >= 1, got {limit}")
        records = records[:limit]
    return records


def load_split(source: str, split: str | None, limit: int | None = None,
          kind: str = "instruction") -> list[Any]:
    """Records of a split of a built-in or ``hf:`` source (``all``: every row); a user file
    is used whole."""
    split = split if source.startswith(("builtin:", "hf:")) and split != "all" else None
    recs = load_records(source, kind=kind, split=split)
    return recs[:limit] if limit else recs
