"""`normlab norms`: the table and JSON must list exactly the registry's entries, with their families."""
import json

import pytest

import normlab.weight  # noqa: F401  (registers the weight family, as the command does)
from normlab.cli import main
from normlab.registry import get_norm_spec, list_norms

FAMILIES = [None, "activation", "weight", "none"]


def _args(family):
    return ["norms"] + ([] if family is None else ["--family", family])


@pytest.mark.parametrize("family", FAMILIES)
def test_table_lists_exactly_the_registry(family, capsys):
    assert main(_args(family)) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = list(list_norms(family))
    assert lines[0].split() == ["name", "family", "layout", "description"]
    assert [line.split()[0] for line in lines[1:]] == expected
    for line in lines[1:]:
        name, shown_family = line.split()[:2]
        assert shown_family == get_norm_spec(name).family
        assert list_norms()[name] in line  # the registry's own description


@pytest.mark.parametrize("family", FAMILIES)
def test_json_matches_the_registry(family, capsys):
    assert main(_args(family) + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(list_norms(family))
    assert all(r["family"] == get_norm_spec(r["name"]).family for r in rows)
    assert all(r["description"] == list_norms()[r["name"]] for r in rows)


@pytest.mark.parametrize("name, layout", [("layer_norm", "(*, C)"), ("group_norm", "(N, C, *)"),
                                          ("spectral_norm", "conv/linear weights"), ("none", "any")])
def test_layout_column_follows_the_spec(name, layout, capsys):
    main(["norms", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[name]["layout"] == layout


def test_unknown_family_is_a_clear_error(capsys):
    assert main(["norms", "--family", "activations"]) == 2
    err = capsys.readouterr().err
    assert "unknown family 'activations'" in err and "activation" in err and "weight" in err
