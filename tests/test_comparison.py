"""The comparison table in docs/norms.md is the one the library measures today."""

from pathlib import Path

from normlab.comparison import comparison_markdown, profile_norm


def test_docs_table_is_up_to_date():
    doc = (Path(__file__).parents[1] / "docs" / "norms.md").read_text()
    assert comparison_markdown() in doc, "docs/norms.md is stale: regenerate it with python -m normlab.comparison"


def test_probe_sees_batch_dependence_only_in_the_batch_norm_family():
    assert profile_norm("batch_norm").batch_dependent and profile_norm("ghost_batch_norm").batch_dependent
    assert not any(profile_norm(n).batch_dependent for n in ("layer_norm", "group_norm", "rms_norm"))
