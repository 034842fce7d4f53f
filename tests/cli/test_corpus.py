"""``mlinguality corpus info``: the table, token counts against a naive loop, one-line errors."""

from __future__ import annotations

import pytest

from mlinguality.cli.corpus import describe, format_info, load_tokenizer, parse_translations
from mlinguality.cli.main import main
from mlinguality.corpus import load_corpus
from mlinguality.errors import MlingualityError
from mlinguality.model import TinyModelConfig, build_tiny_tokenizer

TSV = (
    "id\ten\thi\tzh\n"
    "1\tBlessed are the peacemakers.\tधन्य हैं वे, जो मेल करवानेवाले हैं।\t使人和平的人有福了。\n"
    "2\tIn the beginning.\tआदि में।\t起初。\n"
    "3\t-\tखाली\t空\n"
)


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return build_tiny_tokenizer(TinyModelConfig())


def test_describe_counts_against_a_naive_loop(tmp_path, tiny_tokenizer):
    path = tmp_path / "c.tsv"
    path.write_text(TSV, encoding="utf-8")
    corpus = load_corpus(str(path), ["en", "hi", "zh"])
    infos = describe(corpus, tiny_tokenizer)
    assert [info.examples for info in infos] == [2, 2, 2]
    hi = corpus.texts("hi")
    assert infos[1].mean_chars == (len(hi[0]) + len(hi[1])) / 2
    naive = [len(tiny_tokenizer.encode(text, add_special_tokens=False)) for text in hi]
    assert infos[1].mean_tokens == sum(naive) / 2
    assert infos[0].dropped == {"empty": 1} and infos[1].dropped == {}
    assert describe(corpus)[0].mean_tokens is None


def test_format_info_table(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text(TSV, encoding="utf-8")
    corpus = load_corpus(str(path), ["en", "zh"])
    text = format_info(corpus, describe(corpus))
    lines = text.splitlines()
    assert lines[0] == f"corpus {path}: 2 examples in en, zh; dropped 1 (empty 1)"
    assert lines[2].split() == [
        "lang",
        "examples",
        "mean",
        "chars",
        "mean",
        "tokens",
        "editorial",
        "empty",
        "length_ratio",
        "translation",
    ]
    assert lines[3].split() == ["en", "2", "22.5", "-", "0", "1", "0"]  # (28 + 17) / 2 characters
    assert lines[4].split() == ["zh", "2", "6.5", "-", "0", "0", "0"]  # (10 + 3) / 2


def test_cli_info_with_a_tokenizer_folder(tmp_path, capsys, tiny_tokenizer):
    path = tmp_path / "c.tsv"
    path.write_text(TSV, encoding="utf-8")
    folder = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(folder)
    assert len(load_tokenizer(str(folder))) == len(tiny_tokenizer)
    code, out, err = run_cli(
        ["corpus", "info", str(path), "--langs", "en,hi", "--model", str(folder)], capsys
    )
    assert code == 0, err
    hi_row = next(line for line in out.splitlines() if line.startswith("hi "))
    hi = load_corpus(str(path), ["en", "hi"]).texts("hi")  # 2 examples: en is empty in the third
    expected = sum(len(tiny_tokenizer.encode(t, add_special_tokens=False)) for t in hi) / len(hi)
    assert hi_row.split()[3] == f"{expected:.1f}"


def test_cli_info_bible_book(capsys):
    code, out, _ = run_cli(
        ["corpus", "info", "bible", "--langs", "en,ru", "--books", "Jude"], capsys
    )
    assert code == 0
    assert out.splitlines()[0] == "corpus bible (books Jude): 25 examples in en, ru; dropped 0"
    assert "KJV (King James Version 1611)" in out and "SYN (Russian Synodal 1876)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bible", "--langs", "en,xx"], "the Bible database has no language 'xx'"),
        (["bible", "--langs", "en", "--books", "Matthew-Foo"], "no book 'Foo'"),
        (["bible", "--langs", "en", "--translation", "en"], "'en' is not LANG=NAME"),
        (["bible", "--langs", "en,fr", "--max-length-ratio", "0.5"], "--max-length-ratio"),
        (["nowhere.tsv", "--langs", "en"], "no such file"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(capsys, argv, message):
    code, out, err = run_cli(["corpus", "info", *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith("mlinguality: error: ") and message in err
    assert err.count("\n") == 1


def test_parse_translations():
    assert parse_translations("en=WEB, de=s") == {"en": "WEB", "de": "s"}
    assert parse_translations(None) is None
    with pytest.raises(MlingualityError):
        parse_translations("en=")
