"""Tests for ``normlab study``: listing, bad input, the data check of the quick profile (found locally, or a clear
message saying how to get it), and — slow — the whole smoke profile end to end with the report in a browser."""
from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from normlab.cli import main
from normlab.lab.data import DataNotFoundError, PartialDatasetWarning, write_cifar_folder
from normlab.lab.studies import STUDY_NAMES, get_profile
from normlab.lab.studies.data_check import prepare_data


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setenv("NORMLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))  # the default download folder lives under it


def _local_data(root: Path) -> Path:
    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(20) % 10
    write_cifar_folder(root / "cifar-10-batches-py", images, labels, images[:10], labels[:10])
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text("To be, or not to be.\n" * 50)
    return root


def test_list_names_every_study_and_its_claims(capsys):
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDY_NAMES) and "Wu" not in out.split("\n")[0]


@pytest.mark.parametrize("argv, message", [(["study"], "name a study"), (["study", "nope"], "unknown study"),
                                           (["study", "all", "--workers", "-1"], "--workers")])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_quick_without_data_or_download_says_how_to_get_it(no_data, capsys):
    assert main(["study", "batch_size", "--profile", "quick", "--no-download"]) == 2
    err = capsys.readouterr().err
    for hint in ("--data-dir", "NORMLAB_DATA", "cifar-10-python.tar.gz", "--profile smoke"):
        assert hint in err, hint


def test_quick_without_network_says_the_download_failed(no_data, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("normlab.lab.data.download.urlopen", offline)
    assert main(["study", "transformer", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "download failed" in err and "NORMLAB_DATA" in err and "input.txt" in err


def test_prepare_data_finds_a_local_copy_and_reports_its_provenance(tmp_path, monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    with pytest.warns(PartialDatasetWarning):  # 20 images: the loader says it is a partial copy
        root, summaries = prepare_data(get_profile("quick"), {"images", "text"}, _local_data(tmp_path),
                                       download=False)
    assert root == tmp_path
    assert "partial copy of CIFAR-10" in summaries["images"] and "characters" in summaries["text"]
    with pytest.raises(DataNotFoundError):
        prepare_data(get_profile("quick"), {"images"}, tmp_path / "empty", download=False)


@pytest.mark.slow
def test_smoke_profile_end_to_end_then_report_in_a_browser(tmp_path, capsys):
    """Every study on the smoke profile through the CLI, a rerun that resumes, and the report in Chromium."""
    import time

    home = str(tmp_path / "home")
    start = time.perf_counter()
    assert main(["study", "all", "--profile", "smoke", "--home", home, "--quiet"]) == 0
    first = time.perf_counter() - start
    for name in STUDY_NAMES:
        result = json.loads((Path(home) / "studies" / name / "result.json").read_text())
        assert result["verdicts"] and all(v["status"] == "inconclusive" for v in result["verdicts"])
        assert all(r["status"] == "finished" for r in result["runs"]), name
    start = time.perf_counter()
    assert main(["study", "all", "--profile", "smoke", "--home", home, "--quiet"]) == 0
    assert time.perf_counter() - start < first / 2  # nothing retrained, every analysis cached
    assert main(["report", "--home", home]) == 0
    sys.path.insert(0, str(Path(__file__).parent))
    from test_report_browser import CHROMIUM, browser_check

    if CHROMIUM is not None:
        check, console, _ = browser_check(Path(home) / "report" / "report.html", tmp_path)
        assert check["images"] >= len(STUDY_NAMES) - 1 and check["broken"] == [] and console == []
