"""Tests for normlab.lab.report: the HTML is self-contained and escaped, figures are real PNGs, anchors are
labelled, configs and code version stand under every figure; the Markdown summary; the CLI."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from normlab.cli import main
from normlab.lab.report import load_results, render_png, write_report
from normlab.lab.report.markdown import escape_md
from normlab.lab.report.provenance import config_summary

sys.path.insert(0, str(Path(__file__).parent))
from test_report_fixtures import HOSTILE, fake_result, write_fake_home  # noqa: E402


class _Collector(HTMLParser):
    """Collects tags, img sources, script tags and the text of the document."""

    def __init__(self):
        super().__init__()
        self.images, self.scripts, self.links, self.text = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "a":
            self.links.append(attrs.get("href", ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def report(tmp_path):
    files = write_report(write_fake_home(tmp_path))
    page = files.html.read_text(encoding="utf-8")
    parsed = _Collector()
    parsed.feed(page)
    return files, page, parsed


def test_html_is_self_contained_with_decodable_png_images(report):
    files, page, parsed = report
    assert len(parsed.images) == 4  # two figures × two studies
    for image in parsed.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(image["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["'](?!data:|#|https?://)""", page)  # nothing loaded from disk
    assert files.studies == ["convergence", "batch_size"]  # registry order, not alphabetical


def test_user_strings_are_escaped_everywhere(report):
    _, page, parsed = report
    assert parsed.scripts == 0 and "<script>" not in page
    assert html.escape(HOSTILE, quote=True) in page
    assert HOSTILE in "".join(parsed.text)  # it reads back as the original text


def test_anchor_is_labelled_as_published_and_configs_stand_under_figures(report):
    _, page, parsed = report
    text = "".join(parsed.text)
    assert "Published numbers — Wu & He (2018), not measured by normlab" in text
    assert "34.7" in text and "https://arxiv.org/abs/1803.08494" in parsed.links
    assert text.count("Exact configs behind this figure") == 4
    assert "code version 0.1.0+abc" in text
    assert "(published)" not in text  # the legend label lives inside the PNG, not the page


def test_verdict_effect_and_rule_are_shown(report):
    _, page, parsed = report
    text = "".join(parsed.text)
    assert "supported" in text and "95% CI, welch-t, n=3/3" in text and "Rule: supported if" in text


def test_markdown_summary_escapes_and_links_figures(report):
    files, _, _ = report
    text = files.markdown.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "](figures/batch_size-error.png)" in text and all(p.is_file() for p in files.figures)
    table_rows = [line for line in text.splitlines() if line.startswith("| batch_size")]
    assert table_rows and all(line.count(" | ") == 4 for line in table_rows)  # the pipes were escaped


def test_empty_home_gives_a_page_that_says_what_to_run(tmp_path):
    files = write_report(tmp_path)
    assert "normlab study all --profile smoke" in files.html.read_text()
    assert files.studies == [] and files.figures == []


def test_unreadable_results_are_skipped_with_a_reason(tmp_path):
    write_fake_home(tmp_path, ("batch_size",))
    bad = tmp_path / "studies" / "broken"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps({"not": "a result"}))
    results, skipped = load_results(tmp_path)
    assert [r["study"] for r in results] == ["batch_size"] and "not a normlab study result" in skipped[0]


def test_png_renders_every_panel_and_tolerates_missing_values():
    figure = fake_result()["figures"][0]
    png = render_png(figure)
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png))
    assert pixels.shape[1] > pixels.shape[0] > 100  # two panels side by side


@pytest.mark.parametrize("text, expected", [("a|b", "a\\|b"), ("<b>", "&lt;b&gt;"), ("x\ny", "x y")])
def test_escape_md(text, expected):
    assert escape_md(text) == expected


def test_config_summary_splits_shared_and_varying_settings():
    runs = [{"run_id": "a", "labels": {}, "config": {"lr": 0.1, "norm": "bn", "x": [1]}},
            {"run_id": "b", "labels": {}, "config": {"lr": 0.1, "norm": "gn"}}]
    summary = config_summary(runs)
    assert summary.shared == {"lr": 0.1} and summary.varying == ["norm", "x"]
    assert summary.rows[1][2] == {"norm": "gn", "x": "<absent>"}


def test_cli_report_writes_files(tmp_path, capsys):
    write_fake_home(tmp_path, ("batch_size",))
    assert main(["report", "--home", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file() and "1 study" in capsys.readouterr().out
