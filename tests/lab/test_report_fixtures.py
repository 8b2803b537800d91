"""A fabricated study result for the report tests (no tests here): hostile strings, a published anchor, figures."""
from __future__ import annotations

import json
from pathlib import Path

from normlab.lab.studies.anchors import WU_HE_2018, wu_he_series
from normlab.lab.studies.framework import SCHEMA, SCHEMA_VERSION
from normlab.lab.studies.results import Figure, Panel, Series, Table
from normlab.lab.studies.stats import welch_interval
from normlab.lab.studies.verdicts import exceeds, within

HOSTILE = '<script>alert("x")</script> & "quotes" | pipes'


def fake_result(study: str = "batch_size") -> dict:
    """A result dict shaped like run_study's, with user-given strings that must be escaped."""
    effect = welch_interval([40.0, 41.0, 39.5], [30.0, 31.0, 29.0], name=f"err gap {HOSTILE}", units="pt")
    runs = [{"run_id": f"run{i}", "labels": {"norm": norm, "seed": i % 2}, "status": "finished",
             "config": {"lr": 0.05, "norm": norm, "seed": i % 2, "tag": HOSTILE}, "final": {"test_acc": 0.5},
             "error": None} for i, norm in enumerate(["batch_norm", "batch_norm", "group_norm", "group_norm"])]
    figures = [
        Figure("error", f"Error vs batch {HOSTILE}", [
            Panel("ours", "batch", "error (%)", [Series("BN", [2, 32], [40.0, 30.0], [1.0, 1.0]),
                                                 Series("GN", [2, 32], [35.0, None], [1.0, None])], x_log=True,
                  x_ticks=[2, 32]),
            Panel("published", "batch", "error (%)", wu_he_series(), x_log=True)],
               caption=HOSTILE, run_ids=["run0", "run2"]).to_dict(),
        Figure("scatter", "points", [Panel("", "x", "y", [Series("a", [1, 2], [3, 4], line=False)])]).to_dict(),
    ]
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "study": study, "study_version": 1,
            "title": f"Title {HOSTILE}", "summary": HOSTILE, "claims": [HOSTILE], "profile": "quick",
            "conclusive": True, "settings": {"epochs": 2}, "data": {"images": HOSTILE}, "code_version": "0.1.0+abc",
            "environment": {"python": "3.11", "host": HOSTILE}, "started_at": "t0", "finished_at": "t1",
            "timing": {"train_s": 1.0, "analysis_s": 1.0, "total_s": 2.0}, "runs": runs,
            "tables": [Table("t", f"Errors {HOSTILE}", ["norm", HOSTILE], [["BN", 40.123456], [HOSTILE, None]],
                             caption=HOSTILE, run_ids=["run0", "run1"]).to_dict()],
            "figures": figures, "anchors": [WU_HE_2018.to_dict()],
            "verdicts": [exceeds(f"claim {HOSTILE}", effect, 1.0).to_dict(),
                         within("flat", effect, 2.0).to_dict()],
            "notes": [f"note {HOSTILE}"]}


def write_fake_home(home: Path, studies: tuple[str, ...] = ("batch_size", "convergence")) -> Path:
    """A lab home with one fake result per study name."""
    for study in studies:
        folder = home / "studies" / study
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(fake_result(study)))
    return home
