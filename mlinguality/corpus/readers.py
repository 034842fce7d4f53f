"""Readers for parallel text files: TSV/CSV, JSONL and Moses line-aligned files.

Each reader returns :class:`~mlinguality.corpus.core.RawExample` rows holding a text for every
requested language, and raises :class:`~mlinguality.errors.MlingualityError` with a one-line
message naming the file and line for bad input: invalid UTF-8, an empty file, a missing
language, a malformed row, or (Moses) files of different lengths. Ids are the ``example_id``
column/key when the source has one, else the ``id`` column/key (unless ``id`` is requested as a
language: ``id`` is also ISO 639-1 Indonesian), else ``<file name>:<line>``. Lines are split on ``\\n``
only (``str.splitlines`` would also split on U+2028 and other separators inside a text).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mlinguality.choices import TsvQuoting
from mlinguality.corpus.core import RawExample
from mlinguality.errors import MlingualityError

ID_FIELD = "example_id"  # the id column: a name no language code can take
LEGACY_ID_FIELD = "id"  # also the id column, unless Indonesian ("id") is one of the languages


def id_field(available: Sequence[str], langs: Sequence[str]) -> str | None:
    """The column/key that holds example ids, if any.

    >>> id_field(["id", "en", "fr"], ["en", "fr"]), id_field(["id", "en"], ["en", "id"])
    ('id', None)
    """
    if ID_FIELD in available:
        return ID_FIELD
    if LEGACY_ID_FIELD in available and LEGACY_ID_FIELD not in langs:
        return LEGACY_ID_FIELD
    return None


def read_text(path: Path) -> str:
    """Read a UTF-8 file (a leading BOM is dropped); name the line of the first bad byte."""
    if not path.is_file():
        raise MlingualityError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MlingualityError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{data[error.start]:02x})"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise MlingualityError(f"{path}: empty file")
    return text


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` (``\\n`` or ``\\r\\n``), without a trailing empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def listed_columns(available: Sequence[str]) -> str:
    """The columns a missing language could be, for a message: ``example_id`` left out, ``id``
    named as what it may be (the ids, or Indonesian's language code).

    >>> listed_columns(["example_id", "en", "id"])
    'en, id (the ids, or Indonesian)'
    """
    names = [
        f"{name} (the ids, or Indonesian)" if name == LEGACY_ID_FIELD else name
        for name in available
        if name != ID_FIELD
    ]
    return ", ".join(names) or "(none)"


def _missing(path: Path, langs: Sequence[str], available: Sequence[str], what: str) -> None:
    absent = [lang for lang in langs if lang not in available]
    if absent:
        raise MlingualityError(
            f"{path}: no {what} for language {absent[0]!r}; available: {listed_columns(available)}"
        )


def read_table(
    path: str | Path, langs: Sequence[str], tsv_quoting: TsvQuoting = "literal"
) -> list[RawExample]:
    """Read a TSV (``.tsv``) or CSV (other suffixes) file whose header row names the languages.

    The header holds language codes and optionally an ``example_id`` (or ``id``) column. A TSV
    file is literal by default: one row per line, fields split at tabs, quote marks are text
    (``"Blessed," said he`` stays as written). ``tsv_quoting="csv"`` reads it with CSV quoting
    rules instead (a field in double quotes, ``""`` for a quote mark inside it), as a ``.csv``
    file always is. A quoted field must close on its own line: a quote left open is an error
    at the line where it opens.
    """
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() == ".tsv" and tsv_quoting == "literal":
        records = [(line, content.split("\t")) for line, content in _numbered(text)]
    else:
        records = _quoted_records(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    if not records:
        raise MlingualityError(f"{path}: empty file")
    header = [name.strip() for name in records[0][1]]
    _missing(path, langs, header, "column")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated == [LEGACY_ID_FIELD]:
        raise MlingualityError(
            f"{path}:1: column 'id' appears twice in the header: 'id' is Indonesian's language "
            f"code, so name the example-id column {ID_FIELD!r}"
        )
    if duplicated:
        raise MlingualityError(f"{path}:1: column {duplicated[0]!r} appears twice in the header")
    columns = {name: index for index, name in enumerate(header)}
    ids = id_field(header, langs)
    rows: list[RawExample] = []
    for line, fields in records[1:]:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        if len(fields) != len(header):
            raise MlingualityError(
                f"{path}:{line}: {len(fields)} fields, the header has {len(header)}"
            )
        example_id = fields[columns[ids]] if ids else f"{path.name}:{line}"
        texts = {lang: fields[columns[lang]] for lang in langs}
        rows.append(RawExample(example_id, texts, f"{path}:{line}"))
    if not rows:
        raise MlingualityError(f"{path}: a header but no rows")
    return rows


def _unlimited_fields() -> None:
    """Lift the csv module's field limit (131,072 characters by default, which made one long
    text fail as a quoting error): a corpus field may be as long as its line."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than Py_ssize_t (Windows)
            limit //= 2


def _numbered(text: str) -> list[tuple[int, str]]:
    return list(enumerate(split_lines(text), start=1))


def _quoted_records(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """``(line, fields)`` of each record under CSV quoting rules, one record per line."""
    _unlimited_fields()
    records = []
    literal = (
        " (or read quote marks as text: corpus.tsv_quoting=literal)" if delimiter == "\t" else ""
    )
    for line, content in _numbered(text):
        reader = csv.reader([content], delimiter=delimiter, strict=True)
        try:
            fields = next(reader, [])
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                problem = "a quote mark opens a field that is not closed on this line; close it"
            else:
                problem = "text follows a quoted field; quote the whole field"
            raise MlingualityError(
                f'{path}:{line}: {problem}, writing a quote mark inside it as ""{literal}'
            ) from None
        records.append((line, fields))
    return records


class _RepeatedKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a repeated key (``json`` keeps the last)."""
    record: dict = {}
    for key, value in pairs:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


def read_jsonl(path: str | Path, langs: Sequence[str]) -> list[RawExample]:
    """Read JSON lines, one object per example: ``{"example_id": ..., "en": ..., "fr": ...}``
    (``"id"`` also names the id, unless Indonesian is requested). A key repeated in one object
    is an error (plain ``json`` would silently keep the last value)."""
    path = Path(path)
    rows: list[RawExample] = []
    for line, content in enumerate(split_lines(read_text(path)), start=1):
        if not content.strip():
            continue
        try:
            record = json.loads(content, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as error:
            raise MlingualityError(f"{path}:{line}: invalid JSON ({error.msg})") from None
        except _RepeatedKey as error:
            raise MlingualityError(
                f"{path}:{line}: key {error.args[0]!r} appears twice in one object; keep one"
            ) from None
        if not isinstance(record, dict):
            raise MlingualityError(f"{path}:{line}: expected a JSON object")
        where = f"{path}:{line}"
        _missing(Path(where), langs, list(record), "key")
        for lang in langs:
            if not isinstance(record[lang], str):
                raise MlingualityError(f"{where}: {lang!r} is not a string")
        ids = id_field(list(record), langs)
        example_id = _json_id(record[ids], ids, where) if ids else f"{path.name}:{line}"
        rows.append(RawExample(example_id, {lang: record[lang] for lang in langs}, where))
    return rows


def _json_id(value: object, key: str, where: str) -> str:
    """A JSONL example id: a non-empty string or an integer (``null``, ``NaN``, ``true`` and
    other values used to become the ids ``'None'``, ``'nan'``, ``'True'``)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MlingualityError(
        f"{where}: {key!r} is {json.dumps(value)}, not an id; give every object a non-empty "
        f"string (or integer) {key!r}, or leave the key out to number examples by line"
    )


def file_languages(path: str | Path, tsv_quoting: TsvQuoting = "literal") -> tuple[str, list[str]]:
    """What a corpus file offers, read cheaply from its first line: ``("column", header)`` of a
    TSV/CSV file, ``("key", keys)`` of a JSONL file's first object, ``("file", languages)`` of
    a Moses prefix; ``("", [])`` when that line cannot be read (the reader then says why)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file():
        return ("file", list(moses_files(path)))
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = next((line for line in handle if line.strip()), "").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return ("", [])
    if suffix in (".tsv", ".csv"):
        if suffix == ".tsv" and tsv_quoting == "literal":
            return ("column", [name.strip() for name in first.split("\t")])
        _unlimited_fields()
        try:
            fields = next(csv.reader([first], delimiter="\t" if suffix == ".tsv" else ","), [])
        except csv.Error:
            return ("", [])
        return ("column", [name.strip() for name in fields])
    if suffix in (".jsonl", ".ndjson"):
        try:
            record = json.loads(first)
        except ValueError:
            return ("", [])
        return ("key", list(record)) if isinstance(record, dict) else ("", [])
    return ("", [])


def moses_files(prefix: str | Path) -> dict[str, Path]:
    """Language -> file for a Moses prefix ``dir/name`` (files ``dir/name.en``, ...)."""
    prefix = Path(prefix)
    if not prefix.parent.is_dir():
        return {}
    return {
        path.name[len(prefix.name) + 1 :]: path
        for path in sorted(prefix.parent.glob(f"{prefix.name}.*"))
        if path.is_file()
    }


def read_moses(prefix: str | Path, langs: Sequence[str]) -> list[RawExample]:
    """Read line-aligned files ``prefix.<lang>``; all must have the same number of lines."""
    prefix = Path(prefix)
    files = moses_files(prefix)
    absent = [lang for lang in langs if lang not in files]
    if absent:
        raise MlingualityError(
            f"{prefix}.{absent[0]}: no such file; languages found for {prefix}: "
            f"{', '.join(files) or '(none)'}"
        )
    lines = {lang: split_lines(read_text(files[lang])) for lang in langs}
    first = langs[0]
    for lang in langs[1:]:
        if len(lines[lang]) != len(lines[first]):
            raise MlingualityError(
                f"line counts differ: {files[first]} has {len(lines[first])} lines, "
                f"{files[lang]} has {len(lines[lang])}"
            )
    return [
        RawExample(
            f"{prefix.name}:{index + 1}",
            {lang: lines[lang][index] for lang in langs},
            f"{files[first]}:{index + 1}",
        )
        for index in range(len(lines[first]))
    ]
