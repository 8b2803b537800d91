"""``normlab train``: trains and stores a run, resumes/skips on rerun, and explains bad options."""
from __future__ import annotations

import json

import pytest

from normlab.cli import main
from normlab.lab.config import TrainConfig
from normlab.lab.store import ResultsStore

TINY = ["--dataset", "synthetic", "--train-subset", "32", "--test-subset", "16", "--batch-size", "16", "--epochs",
        "1", "--data-kwargs", '{"image_size": 8, "num_classes": 4}', "--model-kwargs", '{"width": 2}',
        "--device", "cpu"]
TINY_CONFIG = TrainConfig(dataset="synthetic", train_subset=32, test_subset=16, batch_size=16, epochs=1,
                          data_kwargs={"image_size": 8, "num_classes": 4}, model_kwargs={"width": 2}, device="cpu")


def test_train_stores_the_run_and_a_rerun_skips_it(tmp_path, capsys):
    args = ["train", "--norm", "group_norm", "--home", str(tmp_path), *TINY]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "train_loss" in out and "final: " in out and "img/s" in err  # table, summary, progress bar with rate
    run_id = TINY_CONFIG.replace(norm="group_norm").run_id
    record = ResultsStore(tmp_path / "results.db").get(run_id)
    assert record.status == "finished" and record.config["norm"] == "group_norm"
    assert main(args + ["--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "already finished" in out and "img/s" not in err


def test_options_map_onto_the_config(tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"lr": 0.05, "optimizer": "adamw", "betas": [0.8, 0.9]}))
    assert main(["train", "--config", str(base), "--lr", "0.2", "--no-decay-norm", "--no-augment", "--milestones",
                 "0.3", "0.6", "--callbacks", "weight_norm", "--print-config", *TINY]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[:out.rindex("}") + 1])
    expected = TINY_CONFIG.replace(lr=0.2, optimizer="adamw", betas=[0.8, 0.9], no_decay_norm=True, augment=False,
                                   milestones=[0.3, 0.6], callbacks=["weight_norm"])
    assert printed == expected.to_dict() and f"run id: {expected.run_id}" in out


# (extra options, fragment of the error message on stderr)
BAD_OPTIONS = [
    (["--norm", "groupnrom"], "Did you mean 'group_norm'? Valid names: batch_norm"),
    (["--model", "resnet_20"], "Valid models: char_transformer, resnet20"),
    (["--optimizer", "adam"], "must be one of ['adamw', 'sgd']"),
    (["--dataset", "cifar10", "--data-dir", "{empty}"], "Get the data by passing --data-dir"),
    (["--model", "char_transformer"], "needs the 'shakespeare' dataset"),
]


@pytest.mark.parametrize("extra, message", BAD_OPTIONS)
def test_bad_options_get_clear_errors(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in [*TINY, *extra]]
    if "cifar10" in extra:
        args = [a for a in args if a not in ('{"image_size": 8, "num_classes": 4}', "--data-kwargs")]
    assert main(["train", "--home", str(tmp_path / "lab"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lab" / "runs").exists()  # nothing was started


def test_bad_json_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--norm-kwargs", "{num_groups: 8}"])
    assert exit_info.value.code == 2 and "expected a JSON object" in capsys.readouterr().err
