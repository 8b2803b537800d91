"""Tiny Shakespeare: vocabulary, split, where the file is found, checked download, the real corpus."""
from __future__ import annotations

import hashlib
import io
import os
import urllib.error
from pathlib import Path

import pytest

import normlab.lab.data.download as download_module
import normlab.lab.data.shakespeare as shakespeare_module
from normlab.lab.data import (SHAKESPEARE_URL, CharVocab, DataNotFoundError, DownloadError, char_corpus,
                              load_shakespeare)

SHARED_DATA = Path(os.environ.get("NORMLAB_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)


@pytest.mark.parametrize("text", [TEXT, "abc", "ünïcödé ✓\n", "aaaa"])
def test_vocab_round_trip(text):
    vocab = CharVocab.from_text(text)
    assert list(vocab.itos) == sorted(set(text)) and vocab.size == len(set(text))
    ids = vocab.encode(text)
    assert ids.tolist() == [sorted(set(text)).index(c) for c in text]  # ids follow sorted order
    assert vocab.decode(ids) == text and vocab.stoi[text[0]] == ids[0]


def test_unknown_character_is_explained():
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        CharVocab.from_text("abc").encode("abz")


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_split_is_contiguous(val_fraction):
    corpus = char_corpus(TEXT, val_fraction)
    assert len(corpus.train) == int(len(TEXT) * (1 - val_fraction))
    assert corpus.vocab.decode(corpus.train) + corpus.vocab.decode(corpus.val) == TEXT
    assert not corpus.official and "character corpus" in corpus.summary


@pytest.mark.parametrize("val_fraction, text", [(0.0, TEXT), (1.0, TEXT), (0.1, "a")])
def test_bad_split_arguments(val_fraction, text):
    with pytest.raises(ValueError):
        char_corpus(text, val_fraction)


@pytest.mark.parametrize("layout, argument", [
    ("input.txt", "file"), ("input.txt", "folder"), ("tinyshakespeare/input.txt", "folder"),
    ("tinyshakespeare/input.txt", "env"), ("input.txt", "env"),
])
def test_where_the_text_is_found(tmp_path, monkeypatch, layout, argument):
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_text(TEXT)
    if argument == "env":
        monkeypatch.setenv("NORMLAB_DATA", str(tmp_path))
    path = {"file": tmp_path / layout, "folder": tmp_path, "env": None}[argument]
    corpus = load_shakespeare(path)
    assert corpus.source == str((tmp_path / layout).resolve())
    assert corpus.vocab.decode(corpus.val) == TEXT[int(len(TEXT) * 0.9):]


@pytest.mark.parametrize("argument, words", [(None, ["no path given", "--data-dir", "NORMLAB_DATA", "download=True"]),
                                             ("missing", ["missing/input.txt", "--data-dir"])])
def test_missing_text_says_how_to_get_it(tmp_path, argument, words):
    with pytest.raises(DataNotFoundError) as info:
        load_shakespeare(None if argument is None else tmp_path / argument)
    assert all(word in str(info.value) for word in words)


def _serve(monkeypatch, payload):
    def fake_urlopen(url, timeout=None):
        assert url == SHAKESPEARE_URL
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)
    monkeypatch.setattr(download_module, "urlopen", fake_urlopen)


def test_download_checks_the_md5(tmp_path, monkeypatch):
    payload = TEXT.encode()
    _serve(monkeypatch, payload)
    with pytest.raises(DownloadError, match="md5 mismatch"):  # our text is not the published file
        load_shakespeare(tmp_path / "data", download=True, progress=False)
    assert not (tmp_path / "data").exists() or os.listdir(tmp_path / "data") == []

    monkeypatch.setattr(shakespeare_module, "SHAKESPEARE_MD5", hashlib.md5(payload).hexdigest())
    corpus = load_shakespeare(tmp_path / "data", download=True, progress=False)
    assert (tmp_path / "data" / "input.txt").read_bytes() == payload and corpus.official
    assert os.listdir(tmp_path / "data") == ["input.txt"]


def test_download_network_failure(tmp_path, monkeypatch):
    _serve(monkeypatch, urllib.error.URLError("offline"))
    with pytest.raises(DownloadError, match="could not download"):
        load_shakespeare(tmp_path / "corpus.txt", download=True, progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare" / "input.txt").is_file(),
                    reason=f"Tiny Shakespeare is not at {SHARED_DATA}/tinyshakespeare (set NORMLAB_DATA)")
def test_real_corpus_matches_the_published_figures():
    corpus = load_shakespeare(SHARED_DATA / "tinyshakespeare")
    # nanoGPT's data/shakespeare_char/prepare.py reports these for the same file and the same 90/10 split:
    assert (len(corpus.train), len(corpus.val), corpus.vocab.size) == (1_003_854, 111_540, 65)
    assert corpus.official and corpus.vocab.decode(corpus.train[:14]) == "First Citizen:"
