"""Sweeps: the grid's cartesian product, option parsing, and run_sweep's skip / resume / failure handling — in
this process (workers=0) and in spawned worker processes (a run that raises and a worker that dies)."""
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

from normlab.lab.config import TrainConfig
from normlab.lab.paths import store_path
from normlab.lab.store import ResultsStore
from normlab.cli.sweep import parse_grid_option, parse_option_value
from normlab.lab.sweep import expand_grid, run_sweep, worker_threads

BASE = {"model": "resnet20", "dataset": "synthetic", "epochs": 1, "device": "cpu"}

GRIDS = [
    {"norm": ["batch_norm", "group_norm"], "seed": [0, 1, 2]},
    {"batch_size": [8, 32], "lr": [0.1, 0.05], "weight_decay": [0.0, 5e-4]},
    {"seed": [3]},
    {"norm": ["layer_norm"], "batch-size": [4, 16]},
]


@pytest.mark.parametrize("grid", GRIDS)
def test_expand_grid_is_the_cartesian_product_in_order(grid):
    configs = expand_grid(BASE, grid)
    names = [key.replace("-", "_") for key in grid]
    expected = [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]
    assert [{n: getattr(c, n) for n in names} for c in configs] == expected
    for config in configs:  # everything else comes from the base
        assert (config.model, config.dataset, config.epochs) == ("resnet20", "synthetic", 1)
        assert config.to_dict() == TrainConfig(**{**BASE, **{n: getattr(config, n) for n in names}}).to_dict()


def test_expand_grid_overrides_the_base_and_drops_repeats():
    configs = expand_grid({**BASE, "seed": 9}, {"seed": [0, 0, 1]})
    assert [c.seed for c in configs] == [0, 1]


def test_expand_grid_takes_a_trainconfig_as_base():
    base = TrainConfig(**BASE)
    assert [c.norm for c in expand_grid(base, {"norm": ["rms_norm", "none"]})] == ["rms_norm", "none"]


BAD_GRIDS = [
    (BASE, {"batch_szie": [8]}, "unknown option 'batch_szie' in the grid; did you mean 'batch_size'"),
    ({"lerning_rate": 0.1}, {}, "unknown option 'lerning_rate' in the base config"),
    (BASE, {"seed": []}, "grid option 'seed' has no values"),
    (BASE, {"seed": 3}, "needs a list of values"),
    (BASE, {"norm": "group_norm"}, "needs a list of values"),
    (BASE, {"seed": [0], "seed ": [1]}, "given twice"),
    (BASE, {"optimizer": ["sgd", "adam"]}, r"grid combination \{'optimizer': 'adam'\} is not a valid config"),
    (BASE, {"norm": ["group_nrom"]}, "Did you mean 'group_norm'"),
]


@pytest.mark.parametrize("base, grid, message", BAD_GRIDS)
def test_expand_grid_errors_say_what_is_wrong(base, grid, message):
    with pytest.raises(ValueError, match=message):
        expand_grid(base, grid)


PARSED = [
    ("norm=batch_norm,group_norm", ("norm", ["batch_norm", "group_norm"])),
    ("batch-size=2,4, 8", ("batch_size", [2, 4, 8])),
    ("lr=0.1,1e-2", ("lr", [0.1, 0.01])),
    ("nesterov=true,no", ("nesterov", [True, False])),
    ("grad_clip=none,1", ("grad_clip", [None, 1.0])),
    ("betas=[0.9,0.99];[0.9,0.999]", ("betas", [[0.9, 0.99], [0.9, 0.999]])),
    ('norm_kwargs={"num_groups":8}', ("norm_kwargs", [{"num_groups": 8}])),
]


@pytest.mark.parametrize("text, expected", PARSED)
def test_parse_grid_option(text, expected):
    assert parse_grid_option(text) == expected


@pytest.mark.parametrize("text, message", [
    ("norm", "looks like key=v1,v2"), ("=1,2", "looks like key=v1,v2"), ("seed=", "looks like key=v1,v2"),
    ("seed=1,two", "option 'seed' needs an integer, got 'two'"), ("nesterov=maybe", "needs true or false"),
    ("betas=[0.9", "needs a JSON list"), ("epoch=1,2", "did you mean 'epochs'"),
])
def test_parse_grid_option_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_grid_option(text)


def test_parse_option_value_keeps_strings():
    assert parse_option_value("norm", "none") == "none"  # not Optional: the string 'none', the registry name


# -- running ------------------------------------------------------------------------------------------------
CALLS = []


def fake_train(config, *, home, progress):
    """Stands in for the trainer: stores the run like it does, fails for seed 13."""
    CALLS.append(config.seed)
    with ResultsStore(store_path(home)) as store:
        record = store.start_run(config.to_dict(), environment={})
        if record.already_finished:
            return {"test_acc": record.metrics["test_acc"]}
        if config.seed == 13:
            raise RuntimeError("exploding gradients")
        metrics = {"test_acc": config.seed / 100}
        store.finish_run(record.run_id, metrics)
        return metrics


def test_in_process_sweep_skips_finished_runs_and_records_failures(tmp_path):
    CALLS.clear()
    configs = expand_grid(BASE, {"seed": [1, 13, 2]})
    first = run_sweep(configs + configs[:1], home=tmp_path, workers=0, train_fn=fake_train, quiet=True)
    assert [(r.config.seed, r.status) for r in first] == [(1, "finished"), (13, "failed"), (2, "finished")]
    assert first[0].metrics == {"test_acc": 0.01} and "exploding gradients" in first[1].error
    assert CALLS == [1, 13, 2]  # the repeated config ran once
    with ResultsStore(store_path(tmp_path)) as store:
        assert store.get(configs[1].run_id).status == "failed"
        assert "exploding gradients" in store.get(configs[1].run_id).error
    CALLS.clear()
    again = run_sweep(configs, home=tmp_path, workers=0, train_fn=fake_train, quiet=True)
    assert [r.status for r in again] == ["skipped", "failed", "skipped"]
    assert CALLS == [13]  # only the unfinished run was tried again ...
    assert again[1].resumed and not again[0].resumed  # ... as a resumed run
    assert again[0].metrics == {"test_acc": 0.01}


def test_an_interrupted_run_is_resumed(tmp_path):
    config = expand_grid(BASE, {"seed": [4]})[0]
    with ResultsStore(store_path(tmp_path)) as store:
        store.start_run(config.to_dict(), environment={})  # a sweep killed while this run was training
    CALLS.clear()
    (result,) = run_sweep([config], home=tmp_path, workers=0, train_fn=fake_train, quiet=True)
    assert (result.status, result.resumed, CALLS) == ("finished", True, [4])


def test_quiet_prints_nothing_and_progress_lines_name_the_runs(tmp_path, capsys):
    configs = expand_grid(BASE, {"seed": [5, 13]})
    run_sweep(configs, home=tmp_path, workers=0, train_fn=fake_train, quiet=True)
    assert capsys.readouterr() == ("", "")
    run_sweep(expand_grid(BASE, {"seed": [6]}), home=tmp_path, workers=0, train_fn=fake_train, progress=False)
    out = capsys.readouterr().out
    assert out.startswith("finished") and configs[0].run_id not in out and "test_acc=0.06" in out


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_worker_count(workers, tmp_path):
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        run_sweep([], home=tmp_path, workers=workers)


JOBS = '''
import os
import torch
from normlab.lab.paths import store_path
from normlab.lab.store import ResultsStore


def train(config, *, home, progress):
    if config.seed == 66:
        os._exit(3)  # a worker dying (out of memory, a segfault) in the middle of a run
    with ResultsStore(store_path(home)) as store:
        record = store.start_run(config.to_dict(), environment={"pid": os.getpid()})
        if config.seed == 13:
            raise RuntimeError("exploding gradients")
        metrics = {"test_acc": config.seed / 100, "threads": torch.get_num_threads(), "pid": os.getpid()}
        store.finish_run(record.run_id, metrics)
        return metrics
'''


def test_worker_processes_survive_a_failing_run_and_a_dying_worker(tmp_path, monkeypatch):
    (tmp_path / "sweep_jobs_for_test.py").write_text(textwrap.dedent(JOBS))
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers import the job module by name
    import sweep_jobs_for_test

    configs = expand_grid(BASE, {"seed": [1, 13, 66, 2, 3]})
    results = run_sweep(configs, home=tmp_path / "lab", workers=2, train_fn=sweep_jobs_for_test.train, quiet=True)
    assert [r.status for r in results] == ["finished", "failed", "failed", "finished", "finished"]
    assert "exploding gradients" in results[1].error
    assert "worker process" in results[2].error and "exit code 3" in results[2].error
    finished = [r for r in results if r.status == "finished"]
    assert [r.metrics["test_acc"] for r in finished] == [0.01, 0.02, 0.03]
    assert {r.metrics["threads"] for r in finished} == {worker_threads(2)}
    assert all(r.metrics["pid"] != os.getpid() for r in finished)  # trained in worker processes
    with ResultsStore(store_path(tmp_path / "lab")) as store:
        statuses = [store.get(c.run_id).status for c in configs]
        assert statuses == ["finished", "failed", "failed", "finished", "finished"]
        assert "exit code 3" in store.get(configs[2].run_id).error
    sys.modules.pop("sweep_jobs_for_test", None)


def test_worker_threads_share_the_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert [worker_threads(n) for n in (1, 2, 10 * cores)] == [cores, max(1, cores // 2), 1]


def test_real_trainer_in_process(tmp_path):
    """The default train function end to end on a tiny synthetic set (no norm layers: they are not what is tested
    here, and their first call compiles kernels); a rerun trains nothing."""
    base = {**BASE, "data_kwargs": {"num_train": 16, "num_test": 8, "image_size": 8, "num_classes": 2},
            "model_kwargs": {"width": 2}, "batch_size": 8, "augment": False}
    (result,) = run_sweep(expand_grid(base, {"norm": ["none"]}), home=tmp_path, workers=0, quiet=True)
    assert result.status == "finished", result.error
    assert 0.0 <= result.metrics["test_acc"] <= 1.0 and result.metrics["epochs_completed"] == 1.0
    (again,) = run_sweep(expand_grid(base, {"norm": ["none"]}), home=tmp_path, workers=0, quiet=True)
    assert again.status == "skipped" and again.metrics == result.metrics


# -- the command ----------------------------------------------------------------------------------------------
TINY = ["--dataset", "synthetic", "--data-kwargs", '{"num_train":16,"num_test":8,"image_size":8,"num_classes":2}',
        "--model-kwargs", '{"width":2}', "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--no-augment"]


def test_cli_dry_run_lists_the_product(tmp_path, capsys):
    from normlab.cli import main

    argv = ["sweep", *TINY, "--home", str(tmp_path), "--grid", "norm=batch_norm,none", "--grid", "lr=0.1,0.01",
            "--dry-run"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("shared: ") and 'dataset="synthetic"' in lines[0] and "norm=" not in lines[0]
    assert lines[1].split() == ["#", "run", "id", "stored", "norm", "lr"]
    rows = [line.split() for line in lines[2:-1]]
    assert [(r[3], r[4]) for r in rows] == [("batch_norm", "0.1"), ("batch_norm", "0.01"), ("none", "0.1"),
                                            ("none", "0.01")]
    expected = expand_grid({"dataset": "synthetic", "epochs": 1}, {"norm": ["batch_norm"], "lr": [0.1]})[0]
    assert rows[0][2] == "new" and len(rows[0][1]) == len(expected.run_id)
    assert lines[-1] == "4 runs, 0 already finished"
    assert not (tmp_path / "results.db").exists()  # a dry run writes nothing


def test_cli_sweep_trains_then_skips(tmp_path, capsys):
    from normlab.cli import main

    argv = ["sweep", *TINY, "--home", str(tmp_path), "--grid", "norm=none", "--grid", "seed=0,1", "--workers", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep: 2 runs — 2 trained, 0 already finished, 0 failed" in out
    assert main(argv) == 0
    assert "0 trained, 2 already finished" in capsys.readouterr().out
    assert main(argv + ["--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 runs, 2 already finished"


@pytest.mark.parametrize("extra, message", [
    (["--grid", "nrom=none"], "did you mean 'norm'"),
    (["--grid", "seed=0,x"], "option 'seed' needs an integer"),
    (["--grid", "seed=0", "--grid", "seed=1"], "given twice"),
    (["--grid", "optimizer=adam"], "optimizer must be one of"),
    (["--workers", "-1"], "--workers must be 0 or more"),
])
def test_cli_errors_exit_2(extra, message, tmp_path, capsys):
    from normlab.cli import main

    assert main(["sweep", *TINY, "--home", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_data_stops_before_training(tmp_path, capsys, monkeypatch):
    from normlab.cli import main

    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    argv = ["sweep", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--home", str(tmp_path),
            "--grid", "seed=0,1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no CIFAR-10 files found" in err and "--data-dir" in err and "--download" in err
    assert not (tmp_path / "results.db").exists()  # no run was started


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_result(tmp_path):
    """Kill a real `normlab sweep` (parent and worker) after its run has logged an epoch; running the same command
    again resumes the run from its checkpoint and ends with the metrics of an uninterrupted run."""
    import signal
    import subprocess
    import time

    data = {"num_train": 256, "num_test": 8, "image_size": 8, "num_classes": 2}  # 32 steps per epoch
    options = ["--dataset", "synthetic", "--data-kwargs", json.dumps(data), "--model-kwargs", '{"width":2}',
               "--batch-size", "8", "--epochs", "6", "--device", "cpu", "--grid", "norm=none", "--workers", "1",
               "--quiet"]
    command = [sys.executable, "-c", "import sys; from normlab.cli import main; sys.exit(main())", "sweep", *options]
    killed = subprocess.Popen(command + ["--home", str(tmp_path / "a")], start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    (config,) = expand_grid({"dataset": "synthetic", "epochs": 6, "batch_size": 8, "device": "cpu",
                             "data_kwargs": data, "model_kwargs": {"width": 2}}, {"norm": ["none"]})
    deadline, logged = time.time() + 300, False
    while not logged and time.time() < deadline and killed.poll() is None:
        path = store_path(tmp_path / "a")
        if path.exists():
            with ResultsStore(path) as store:
                logged = store.find(config.to_dict()) is not None and len(store.history(config.run_id)) > 0
        time.sleep(0.2)
    assert logged and killed.poll() is None, "the sweep should still be training after its first epoch"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    with ResultsStore(store_path(tmp_path / "a")) as store:
        assert store.get(config.run_id).status == "running"  # interrupted
    subprocess.run(command + ["--home", str(tmp_path / "a")], check=True, timeout=600)
    subprocess.run(command + ["--home", str(tmp_path / "b")], check=True, timeout=600)  # never interrupted
    with ResultsStore(store_path(tmp_path / "a")) as a, ResultsStore(store_path(tmp_path / "b")) as b:
        resumed, plain = a.get(config.run_id), b.get(config.run_id)
        assert resumed.status == plain.status == "finished" and resumed.attempts == 2
        assert resumed.metrics == plain.metrics


_POOL_AFTER_NUMBA = """
import os, torch, normlab
from numba import njit
from normlab.lab.sweep import size_numba_pool
normlab.nn.LayerNorm(8)(torch.randn(2, 8))  # the kernels load Numba and start its thread pool
size_numba_pool(1)
assert "NUMBA_NUM_THREADS" not in os.environ, os.environ["NUMBA_NUM_THREADS"]
njit(lambda a: a + 1)(1)  # a compilation after the pool started: fails if the variable changed
print("ok")
"""


def test_numba_pool_is_not_resized_once_numba_is_loaded():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", _POOL_AFTER_NUMBA], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
