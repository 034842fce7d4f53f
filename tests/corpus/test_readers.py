"""Readers and load_corpus on small files written here; every bad input is a one-line error."""

from __future__ import annotations

import json

import pytest

from mlinguality.corpus import load_corpus
from mlinguality.corpus.readers import read_jsonl, read_moses, read_table
from mlinguality.errors import MlingualityError

HI = "धन्य हैं वे, जो मेल करवानेवाले हैं, परमेश्\u200dवर के पुत्र कहलाएँगे।"
ZH = "使人和平的人有福了， 因为他们必称为 神的儿子。"
RU = "Блаженны миротворцы, ибо они будут наречены сынами Божиими."
EN = "Blessed are the peacemakers: for they shall be called the children of God."


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- TSV / CSV ---------------------------------------------------------------------------------


def test_tsv_with_id_column(tmp_path):
    path = write(
        tmp_path / "c.tsv",
        f"id\ten\thi\tzh\tru\nv9\t{EN}\t{HI}\t{ZH}\t{RU}\nv10\tOne.\tएक।\t一。\tОдин.\n",
    )
    rows = read_table(path, ["hi", "en"])
    assert [row.id for row in rows] == ["v9", "v10"]
    assert rows[0].texts == {"hi": HI, "en": EN} and rows[0].where == f"{path}:2"
    corpus = load_corpus(str(path), ["en", "hi", "zh", "ru"])
    assert (
        corpus.texts("hi")[0] == HI and corpus.texts("zh")[0] == ZH and corpus.texts("ru")[0] == RU
    )


def test_csv_without_id_column_quotes_crlf_and_bom(tmp_path):
    text = '\ufeffen,fr\r\n"Hello, world","Bonjour, le monde"\r\n"Say ""hi""",Salut\r\n'
    rows = read_table(write(tmp_path / "p.csv", text), ["en", "fr"])
    assert [row.id for row in rows] == ["p.csv:2", "p.csv:3"]
    assert rows[0].texts == {"en": "Hello, world", "fr": "Bonjour, le monde"}
    assert rows[1].texts["en"] == 'Say "hi"'


def test_table_missing_language_column_lists_available(tmp_path):
    path = write(tmp_path / "c.tsv", "id\ten\tfr\n1\ta\tb\n")
    with pytest.raises(MlingualityError) as error:
        read_table(path, ["en", "de"])
    # "id" may be the ids or Indonesian: listed as such (issue 22), "example_id" never
    assert one_line(error) == (
        f"{path}: no column for language 'de'; available: id (the ids, or Indonesian), en, fr"
    )


def test_table_invalid_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "c.tsv", b"en\tfr\nok\tok\nbad \xff\tx\n")
    with pytest.raises(MlingualityError) as error:
        read_table(path, ["en", "fr"])
    assert one_line(error) == f"{path}:3: invalid UTF-8 (byte 0xff)"


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path / "c.tsv", content)
    with pytest.raises(MlingualityError, match=r"c.tsv: empty file$"):
        load_corpus(str(path), ["en"])


def test_table_header_only_and_bad_row(tmp_path):
    with pytest.raises(MlingualityError, match="a header but no rows"):
        read_table(write(tmp_path / "h.tsv", "en\tfr\n"), ["en"])
    path = write(tmp_path / "r.tsv", "en\tfr\na\tb\nc\n")
    with pytest.raises(MlingualityError, match=r"r.tsv:3: 1 fields, the header has 2"):
        read_table(path, ["en"])


def test_table_duplicate_ids(tmp_path):
    path = write(tmp_path / "d.tsv", "id\ten\n7\ta\n8\tb\n7\tc\n")
    with pytest.raises(MlingualityError) as error:
        load_corpus(str(path), ["en"])
    assert one_line(error) == f"{path}: duplicate id '7' at {path}:4 (first at {path}:2)"


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl(tmp_path):
    lines = [{"id": "a", "en": EN, "hi": HI}, {"en": "Two", "hi": "दो", "extra": 1}]
    path = write(
        tmp_path / "p.jsonl",
        "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n\n",
    )
    rows = read_jsonl(path, ["en", "hi"])
    assert [row.id for row in rows] == ["a", "p.jsonl:2"]
    assert rows[0].texts["hi"] == HI


def test_jsonl_errors_name_the_line(tmp_path):
    path = write(tmp_path / "p.jsonl", '{"en": "a", "fr": "b"}\n{"en": "c"}\n')
    with pytest.raises(MlingualityError) as error:
        read_jsonl(path, ["en", "fr"])
    assert one_line(error) == f"{path}:2: no key for language 'fr'; available: en"
    path = write(tmp_path / "q.jsonl", '{"en": "a"}\n{"en": \n')
    with pytest.raises(MlingualityError, match=r"q.jsonl:2: invalid JSON"):
        read_jsonl(path, ["en"])
    path = write(tmp_path / "r.jsonl", '{"en": 3}\n')
    with pytest.raises(MlingualityError, match=r"r.jsonl:1: 'en' is not a string"):
        read_jsonl(path, ["en"])
    path = write(tmp_path / "s.jsonl", '{"id": 1, "en": "a"}\n{"id": 1, "en": "b"}\n')
    with pytest.raises(MlingualityError, match="duplicate id '1'"):
        load_corpus(str(path), ["en"])


# --- Moses -------------------------------------------------------------------------------------


def test_moses(tmp_path):
    write(tmp_path / "bible.en", f"{EN}\nOne line\u2028with a line separator inside\n")
    write(tmp_path / "bible.ru", f"{RU}\r\nОдна строка\r\n")
    rows = read_moses(tmp_path / "bible", ["en", "ru"])
    assert [row.id for row in rows] == ["bible:1", "bible:2"]
    assert rows[1].texts == {
        "en": "One line\u2028with a line separator inside",
        "ru": "Одна строка",
    }
    corpus = load_corpus(str(tmp_path / "bible"), "ru,en")
    assert corpus.texts("ru")[0] == RU and corpus.langs == ["ru", "en"]


def test_moses_line_count_mismatch_names_both_files(tmp_path):
    write(tmp_path / "m.en", "a\nb\nc\n")
    write(tmp_path / "m.fr", "a\nb\n")
    with pytest.raises(MlingualityError) as error:
        read_moses(tmp_path / "m", ["en", "fr"])
    assert one_line(error) == (
        f"line counts differ: {tmp_path / 'm.en'} has 3 lines, {tmp_path / 'm.fr'} has 2"
    )


def test_moses_missing_language_lists_available(tmp_path):
    write(tmp_path / "m.en", "a\n")
    write(tmp_path / "m.fr", "b\n")
    with pytest.raises(
        MlingualityError, match=r"m.de: no such file; languages found for .*m: en, fr$"
    ):
        load_corpus(str(tmp_path / "m"), ["en", "de"])


def test_moses_invalid_utf8(tmp_path):
    write(tmp_path / "m.en", "a\nb\n")
    write(tmp_path / "m.fr", b"a\n\xc3\n")
    with pytest.raises(MlingualityError, match=r"m.fr:2: invalid UTF-8 \(byte 0xc3\)"):
        read_moses(tmp_path / "m", ["en", "fr"])


# --- load_corpus -------------------------------------------------------------------------------


def test_load_corpus_limit_samples_after_cleaning(tmp_path):
    lines = ["en\tfr"] + [f"e{i}\tf{i}" if i % 3 else "-\t-" for i in range(30)]
    path = write(tmp_path / "c.tsv", "\n".join(lines) + "\n")
    full = load_corpus(str(path), ["en", "fr"])
    assert len(full) == 20 and full.drops == {"empty": 10}
    sample = load_corpus(str(path), ["en", "fr"], limit=5, seed=1)
    assert sample.ids == full.sample(5, seed=1).ids and len(sample) == 5
    assert load_corpus(str(path), ["en", "fr"], limit=5, seed=1).ids == sample.ids


@pytest.mark.parametrize(
    ("langs", "message"),
    [
        ("en,EN", "'EN' is not an ISO 639-1 code"),
        ("en,,fr", "empty code"),
        (["en", "en"], "'en' is given twice"),
        ("english", "'english' is not an ISO 639-1 code"),
    ],
)
def test_load_corpus_rejects_bad_language_codes(tmp_path, langs, message):
    path = write(tmp_path / "c.tsv", "en\tfr\na\tb\n")
    with pytest.raises(MlingualityError, match=message):
        load_corpus(str(path), langs)


def test_load_corpus_bad_sources(tmp_path):
    with pytest.raises(MlingualityError, match="no such file and no Moses files"):
        load_corpus(str(tmp_path / "nothing"), ["en"])
    path = write(tmp_path / "c.txt", "x\n")
    with pytest.raises(MlingualityError, match=r"unknown corpus format \.txt"):
        load_corpus(str(path), ["en"])
    table = write(tmp_path / "c.tsv", "en\na\n")
    with pytest.raises(MlingualityError, match="books and translations apply only"):
        load_corpus(str(table), ["en"], books="NT")
    with pytest.raises(MlingualityError, match="limit must be >= 1"):
        load_corpus(str(table), ["en"], limit=0)


def test_indonesian_column_is_a_language_not_the_id(tmp_path):
    """'id' is ISO 639-1 Indonesian: requested as a language it is text, and the ids come from
    'example_id' (or line numbers); two 'id' columns say how to name the id column."""
    path = write(tmp_path / "i.tsv", "example_id\ten\tid\nv1\tPeace.\tDamai.\nv2\tLove.\tKasih.\n")
    rows = read_table(path, ["en", "id"])
    assert [row.id for row in rows] == ["v1", "v2"]
    assert [row.texts["id"] for row in rows] == ["Damai.", "Kasih."]
    legacy = write(tmp_path / "l.tsv", "id\ten\tid2\nv1\tPeace.\tx\n")
    assert [row.id for row in read_table(legacy, ["en"])] == ["v1"]  # not requested: the id
    plain = write(tmp_path / "p.tsv", "en\tid\nPeace.\tDamai.\n")
    assert [(row.id, row.texts["id"]) for row in read_table(plain, ["en", "id"])] == [
        ("p.tsv:2", "Damai.")
    ]
    both = write(tmp_path / "b.tsv", "id\ten\tid\nv1\tPeace.\tDamai.\n")
    with pytest.raises(MlingualityError) as error:
        read_table(both, ["en"])
    assert "name the example-id column 'example_id'" in one_line(error)
    jsonl = write(tmp_path / "i.jsonl", '{"example_id": "a", "en": "Peace.", "id": "Damai."}\n')
    (row,) = read_jsonl(jsonl, ["en", "id"])
    assert (row.id, row.texts["id"]) == ("a", "Damai.")
