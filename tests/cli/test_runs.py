"""`normlab runs`: list (fixed-width table, filters), show (config, error, per-epoch table) and export (CSV), read
from a results store built here with known contents."""
import csv

import pytest

from normlab.cli import main
from normlab.lab.config import TrainConfig
from normlab.lab.paths import store_path
from normlab.lab.store import ResultsStore

# (name, config changes, final status, per-epoch metrics, final metrics or error)
RUNS = [
    ("bn8", {"norm": "batch_norm", "batch_size": 8, "lr": 0.1}, "finished",
     [{"train_loss": 2.0, "test_acc": 0.30, "test_loss": 1.9, "epoch_time_s": 10.0},
      {"train_loss": 1.5, "test_acc": 0.45, "test_loss": 1.4, "epoch_time_s": 12.5}],
     {"test_acc": 0.4512, "test_loss": 1.4}),
    ("gn8", {"norm": "group_norm", "batch_size": 8, "lr": 0.1}, "finished",
     [{"train_loss": 1.9, "test_acc": 0.35, "test_loss": 1.8, "epoch_time_s": 70.0},
      {"train_loss": 1.4, "test_acc": 0.50, "test_loss": 1.3, "epoch_time_s": 65.0}],
     {"test_acc": 0.5, "test_loss": 1.3}),
    ("gn32", {"norm": "group_norm", "batch_size": 32, "lr": 0.05}, "failed",
     [{"train_loss": 2.1, "test_acc": 0.2, "test_loss": 2.0, "epoch_time_s": 5.0}],
     "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory"),
    ("ln32", {"norm": "layer_norm", "batch_size": 32, "lr": 0.1, "model": "vgg11"}, "running", [], None),
]


@pytest.fixture()
def home(tmp_path):
    ids = {}
    with ResultsStore(store_path(tmp_path)) as store:
        for name, changes, status, history, final in RUNS:
            config = TrainConfig(dataset="synthetic", epochs=2, **changes).to_dict()
            run = store.start_run(config, environment={"torch": "2.13.0", "device": "cpu"})
            for epoch, metrics in enumerate(history):
                store.log_epoch(run.run_id, epoch, metrics)
            if status == "finished":
                store.finish_run(run.run_id, final)
            elif status == "failed":
                store.fail_run(run.run_id, final)
            ids[name] = run.run_id
    return tmp_path, ids


def _lines(capsys):
    return capsys.readouterr().out.splitlines()


def test_list_shows_one_line_per_run_with_its_numbers(home, capsys):
    folder, ids = home
    assert main(["runs", "--home", str(folder)]) == 0
    lines = _lines(capsys)
    assert lines[0].split()[:4] == ["run", "id", "status", "model"]
    assert set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert list(rows) == [ids[name] for name, *_ in RUNS]  # oldest first
    bn8 = rows[ids["bn8"]].split()
    assert bn8[1:4] == ["finished", "resnet20", "batch_norm"]
    assert "bs=8" in bn8 and "ep=2" in bn8 and "lr=0.1" in bn8  # lr differs between the runs: shown
    assert not any(part.startswith("dataset=") for part in bn8)  # the same for every run: not shown
    assert bn8[-4:] == ["2/2", "45.12%", "1.4", "22.5s"]  # epochs, accuracy, loss, summed epoch times
    assert rows[ids["gn8"]].split()[-1] == "2m15s"
    gn32 = rows[ids["gn32"]].split()
    assert gn32[1] == "failed" and gn32[-4:-1] == ["1/2", "-", "-"]
    assert rows[ids["ln32"]].split()[1:3] == ["running", "vgg11"]
    assert lines[-1].startswith("4 runs in ")
    widths = {len(line) for line in lines[:-1]}
    assert max(widths) - min(widths) <= 12  # fixed-width columns (only trailing cells vary)


FILTERS = [
    (["--status", "failed"], ["gn32"]),
    (["--norm", "gn"], ["gn8", "gn32"]),  # any spelling of the norm
    (["--norm", "GroupNorm", "--status", "finished"], ["gn8"]),
    (["--model", "vgg11"], ["ln32"]),
    (["--where", "batch_size=8"], ["bn8", "gn8"]),
    (["--where", "lr=0.1", "--where", "batch_size=32"], ["ln32"]),
    (["--where", "norm_kwargs={}", "--last", "2"], ["gn32", "ln32"]),
    (["--last", "1"], ["ln32"]),
]


@pytest.mark.parametrize("options, expected", FILTERS)
def test_list_filters(options, expected, home, capsys):
    folder, ids = home
    assert main(["runs", "list", "--home", str(folder), *options]) == 0
    shown = [line.split()[0] for line in _lines(capsys)[2:-1]]
    assert shown == [ids[name] for name in expected]


@pytest.mark.parametrize("options, message", [(["--where", "batch_size"], "--where needs KEY=VALUE"),
                                              (["--norm", "groupnrom"], "unknown normalization 'groupnrom'")])
def test_list_bad_filters_exit_2(options, message, home, capsys):
    assert main(["runs", "list", "--home", str(home[0]), *options]) == 2
    assert message in capsys.readouterr().err


def test_list_without_matches_and_without_a_store(home, tmp_path, capsys):
    assert main(["runs", "list", "--home", str(home[0]), "--model", "resnet56"]) == 0
    assert "no runs match" in capsys.readouterr().out
    empty = tmp_path / "empty"
    assert main(["runs", "--home", str(empty)]) == 0
    assert "no results store" in capsys.readouterr().out and not empty.exists()  # listing creates nothing


def test_show_prints_config_error_and_epoch_table(home, capsys):
    folder, ids = home
    assert main(["runs", "show", ids["gn32"][:6], "--home", str(folder)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {ids['gn32']}  failed")
    assert "RuntimeError: CUDA out of memory" in text
    config = dict(line.split(None, 1) for line in text.split("config (* = not the default):\n")[1]
                  .split("\n\n")[0].splitlines())
    assert config["*norm"] == "group_norm" and config["*batch_size"] == "32" and config["model"] == "resnet20"
    assert "torch" in text.split("environment:")[1]
    table = text.split("per-epoch metrics:\n")[1].splitlines()
    assert table[0].split() == ["epoch", "epoch_time_s", "test_acc", "test_loss", "train_loss"]
    assert table[2].split() == ["0", "5", "0.2", "2", "2.1"]


def test_show_unknown_run(home, capsys):
    assert main(["runs", "--home", str(home[0]), "show", "ffffffff"]) == 1
    assert "not in the store" in capsys.readouterr().err


@pytest.mark.parametrize("table, rows", [("runs", 4), ("epochs", 5)])
def test_export_csv(table, rows, home, tmp_path, capsys):
    folder, ids = home
    out = tmp_path / f"{table}.csv"
    assert main(["runs", "export", "--home", str(folder), "--out", str(out), "--table", table]) == 0
    assert f"wrote {rows} rows" in capsys.readouterr().out
    with open(out, newline="") as handle:
        data = list(csv.DictReader(handle))
    assert len(data) == rows
    if table == "runs":
        by_id = {row["run_id"]: row for row in data}
        assert by_id[ids["bn8"]]["config.norm"] == "batch_norm"
        assert float(by_id[ids["bn8"]]["metrics.test_acc"]) == 0.4512
    else:
        assert [float(r["test_acc"]) for r in data if r["run_id"] == ids["gn8"]] == [0.35, 0.50]
