"""Tests for normlab.lab.store: run identity, life cycle, metrics, queries, CSV export and concurrent writers."""
from __future__ import annotations

import csv
import hashlib
import itertools
import math
import multiprocessing
import pickle
import runpy
import sqlite3
import textwrap

import pytest

import normlab.lab.store as store_module
from normlab.lab.store import (STATUSES, ResultsStore, UnknownRunError, canonical_json, collect_environment,
                               config_hash, default_store_path)


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "results.db") as opened:
        yield opened


# -- run identity ----------------------------------------------------------------------------------------------
HASH_CASES = [  # (config, the canonical JSON bytes written out by hand)
    ({"a": 1}, b'{"a":1}'),
    ({"b": 2, "a": 1}, b'{"a":1,"b":2}'),
    ({"lr": 0.1, "model": "resnet20"}, b'{"lr":0.1,"model":"resnet20"}'),
    ({"opt": {"wd": 5e-4, "name": "sgd"}, "sizes": (1, 2)}, b'{"opt":{"name":"sgd","wd":0.0005},"sizes":[1,2]}'),
    ({"norm": None, "flag": True}, b'{"flag":true,"norm":null}'),
    ({"name": "caf\u00e9"}, '{"name":"caf\u00e9"}'.encode("utf-8")),
]


@pytest.mark.parametrize("config, canonical", HASH_CASES)
def test_config_hash_is_sha256_of_canonical_json(config, canonical):
    assert canonical_json(config).encode("utf-8") == canonical
    assert config_hash(config) == hashlib.sha256(canonical).hexdigest()[:16]


@pytest.mark.parametrize("first, second", [({"lr": 1}, {"lr": 1.0}), ({"a": 1}, {"a": 2}),
                                           ({"a": [1, 2]}, {"a": [2, 1]}), ({"a": {"b": 1}}, {"a.b": 1})])
def test_different_configs_get_different_ids(first, second):
    assert config_hash(first) != config_hash(second)


@pytest.mark.parametrize("config, error, words", [
    ({"device": object()}, TypeError, "JSON values"),
    ({"lr": float("nan")}, ValueError, "NaN"),
    ([("a", 1)], TypeError, "must be a dict"),
])
def test_bad_configs_are_refused_with_a_reason(config, error, words):
    with pytest.raises(error, match=words):
        config_hash(config)


# -- life cycle ------------------------------------------------------------------------------------------------
def test_run_life_cycle(store):
    config = {"model": "resnet20", "seed": 0}
    first = store.start_run(config, environment={"device": "cpu"})
    assert (first.status, first.attempts, first.resumed, first.already_finished) == ("running", 1, False, False)
    assert first.run_id == config_hash(config) and first.config == config and first.environment == {"device": "cpu"}

    store.fail_run(first.run_id, RuntimeError("out of memory"))
    failed = store.get(first.run_id)
    assert failed.status == "failed" and failed.error == "RuntimeError: out of memory"

    again = store.start_run(config, environment={})
    assert (again.status, again.attempts, again.resumed) == ("running", 2, True)

    store.finish_run(again.run_id, {"test_acc": 0.9})
    done = store.get(again.run_id)
    assert done.status == "finished" and done.metrics == {"test_acc": 0.9} and done.error is None
    assert done.finished_at is not None and done.created_at <= done.finished_at

    skipped = store.start_run(config, environment={})
    assert skipped.already_finished and skipped.status == "finished" and skipped.attempts == 2


def test_register_adds_pending_then_start_is_not_a_resume(store):
    pending = store.register({"x": 1})
    assert pending.status == "pending" and pending.attempts == 0
    assert store.register({"x": 1}).created_at == pending.created_at
    started = store.start_run({"x": 1}, environment={})
    assert started.status == "running" and not started.resumed and started.attempts == 1


def test_start_run_records_the_environment_by_default(store):
    import torch

    record = store.start_run({"x": 2})
    assert record.environment["torch"] == torch.__version__
    assert record.environment["hostname"] and record.environment["code_version"]


def test_collect_environment_fields():
    import platform

    import torch

    env = collect_environment("cpu")
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["python"] == platform.python_version()
    assert env["code_version"].startswith(env["normlab_version"])
    assert env["git"] == "unknown" or env["code_version"].endswith(env["git"])


# -- per-epoch metrics and artifacts ---------------------------------------------------------------------------
def test_history_round_trip_overwrite_and_nan(store):
    run_id = store.start_run({"x": 3}, environment={}).run_id
    store.log_epoch(run_id, 0, {"loss": 2.0, "acc": 0.1})
    store.log_epoch(run_id, 1, {"loss": 1.0, "acc": 0.5})
    store.log_epoch(run_id, 1, {"loss": 0.75, "acc": 0.5})  # a resumed run re-logs epoch 1
    store.log_epoch(run_id, 2, {"loss": float("nan"), "grad_norm": float("inf")})
    history = store.history(run_id)
    assert history[:2] == [{"epoch": 0, "acc": 0.1, "loss": 2.0}, {"epoch": 1, "acc": 0.5, "loss": 0.75}]
    assert math.isnan(history[2]["loss"]) and history[2]["grad_norm"] == math.inf
    assert store.history(run_id, names=["acc"]) == [{"epoch": 0, "acc": 0.1}, {"epoch": 1, "acc": 0.5}]


@pytest.mark.parametrize("call, error", [
    (lambda s, rid: s.log_epoch(rid, -1, {"a": 1}), ValueError),
    (lambda s, rid: s.log_epoch(rid, 0, {"a": "high"}), TypeError),
    (lambda s, rid: s.log_epoch("feedfacefeedface", 0, {"a": 1}), UnknownRunError),
    (lambda s, rid: s.finish_run("feedfacefeedface", {}), UnknownRunError),
    (lambda s, rid: s.fail_run("feedfacefeedface", "x"), UnknownRunError),
    (lambda s, rid: s.get("feedfacefeedface"), UnknownRunError),
    (lambda s, rid: s.runs(status="done"), ValueError),
    (lambda s, rid: s.export_csv("x.csv", table="nope"), ValueError),
])
def test_bad_calls_raise_clear_errors(store, call, error):
    run_id = store.start_run({"x": 4}, environment={}).run_id
    with pytest.raises(error):
        call(store, run_id)


def test_artifacts_tensors_and_delete(store):
    import numpy as np
    import torch

    run_id = store.start_run({"x": 5}, environment={}).run_id
    store.log_artifact(run_id, "weight_norms", {"conv1": [1.0, 1.1]})
    store.log_artifact(run_id, "weight_norms", {"conv1": np.array([1.0, 1.25])})  # replaces the first
    store.log_epoch(run_id, 0, {"a": torch.tensor(0.5), "b": np.float32(2.0)})
    store.finish_run(run_id, {"acc": torch.tensor(0.75)})
    assert store.artifacts(run_id) == {"weight_norms": {"conv1": [1.0, 1.25]}}
    assert store.history(run_id) == [{"epoch": 0, "a": 0.5, "b": 2.0}] and store.get(run_id).metrics == {"acc": 0.75}
    with pytest.raises(TypeError, match="cannot store"):
        store.log_artifact(run_id, "bad", {"x": object()})
    store.delete(run_id)
    assert store.find({"x": 5}) is None and store.history(run_id) == [] and store.artifacts(run_id) == {}


# -- queries ---------------------------------------------------------------------------------------------------
def test_runs_filters(store):
    grid = [{"norm": n, "optim": {"lr": lr}} for n, lr in itertools.product(["bn", "gn", "ln"], [0.1, 0.01])]
    ids = [store.start_run(c, environment={}).run_id for c in grid]
    store.finish_run(ids[0], {})
    store.fail_run(ids[1], "boom")
    assert [r.run_id for r in store.runs()] == ids
    assert [r.run_id for r in store.runs(status="finished")] == ids[:1]
    assert [r.run_id for r in store.runs(status=["finished", "failed"])] == ids[:2]
    assert [r.config for r in store.runs(where={"norm": "gn"})] == grid[2:4]
    assert [r.config for r in store.runs(where={"optim.lr": 0.01, "norm": ["bn", "ln"]})] == [grid[1], grid[5]]
    assert store.runs(where={"missing.key": 1}) == []


def test_each_status_is_queryable(store):
    ids = {"pending": store.register({"s": 0}).run_id, "running": store.start_run({"s": 1}, environment={}).run_id}
    ids["finished"] = store.start_run({"s": 2}, environment={}).run_id
    ids["failed"] = store.start_run({"s": 3}, environment={}).run_id
    store.finish_run(ids["finished"], {})
    store.fail_run(ids["failed"], "boom")
    assert {status: [r.run_id for r in store.runs(status=status)] for status in STATUSES} == \
        {status: [ids[status]] for status in STATUSES}


def test_get_accepts_a_unique_prefix(store):
    hashes = {}
    for i in itertools.count():  # find two configs whose ids share their first 4 hex digits
        prefix = config_hash({"i": i})[:4]
        if prefix in hashes:
            twins = [hashes[prefix], {"i": i}]
            break
        hashes[prefix] = {"i": i}
    ids = [store.start_run(c, environment={}).run_id for c in twins]
    differ = next(k for k in range(16) if ids[0][k] != ids[1][k])  # >= 4: the shortest unique prefixes
    assert [store.get(i[:differ + 1]).run_id for i in ids] == ids
    with pytest.raises(UnknownRunError, match="several"):
        store.get(ids[0][:4])


def test_export_csv(store, tmp_path):
    a = store.start_run({"model": "vgg11", "optim": {"lr": 0.1, "betas": [0.9, 0.99]}}, environment={"device": "cpu"})
    b = store.start_run({"model": "resnet20", "seed": 1}, environment={})
    store.log_epoch(a.run_id, 0, {"loss": 2.5})
    store.log_epoch(a.run_id, 1, {"loss": 1.5, "acc": 0.4})
    store.finish_run(a.run_id, {"test": {"acc": 0.4}})

    assert store.export_csv(tmp_path / "runs.csv") == 2
    with open(tmp_path / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run_id"] for r in rows] == [a.run_id, b.run_id]
    assert rows[0]["config.optim.lr"] == "0.1" and rows[0]["config.optim.betas"] == "[0.9, 0.99]"
    assert rows[0]["metrics.test.acc"] == "0.4" and rows[0]["device"] == "cpu" and rows[0]["status"] == "finished"
    assert rows[1]["config.seed"] == "1" and rows[1]["config.model"] == "resnet20" and rows[1]["metrics.test.acc"] == ""

    assert store.export_csv(tmp_path / "epochs.csv", table="epochs") == 2
    with open(tmp_path / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run_id"], r["epoch"], r["loss"], r["acc"]) for r in rows] == [
        (a.run_id, "0", "2.5", ""), (a.run_id, "1", "1.5", "0.4")]


# -- storage ---------------------------------------------------------------------------------------------------
def test_wal_mode_persistence_and_pickling(store, tmp_path):
    run_id = store.start_run({"x": 6}, environment={}).run_id
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    copy = pickle.loads(pickle.dumps(store))
    assert copy.path == store.path and copy.get(run_id).status == "running"
    copy.close()
    with ResultsStore(tmp_path / "results.db") as reopened:
        assert reopened.get(run_id).config == {"x": 6}


@pytest.mark.parametrize("home, expected", [("/srv/lab", "/srv/lab/results.db"), ("", "normlab-runs/results.db")])
def test_default_store_path(monkeypatch, home, expected):
    monkeypatch.setenv("NORMLAB_HOME", home)
    assert str(default_store_path()) == expected


# The worker loads store.py by file path: it needs only the standard library, and skipping the `normlab` package
# import (which pulls in torch) keeps process start-up to a fraction of a second on a busy machine.
WORKER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("store_under_test", STORE_FILE)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = module.ResultsStore(DB, timeout=TIMEOUT, retries=RETRIES)
    BARRIER.wait()  # every worker writes at the same moment
    shared = store.start_run({"shared": True}, environment={"worker": WORKER})
    for i in range(RUNS):
        run = store.start_run({"worker": WORKER, "i": i}, environment={"worker": WORKER})
        for epoch in range(EPOCHS):
            store.log_epoch(run.run_id, epoch, {"loss": 1.0 / (epoch + 1), "worker": WORKER})
        store.finish_run(run.run_id, {"value": WORKER * 1000 + i})
    store.log_epoch(shared.run_id, WORKER, {"worker": WORKER})
""")


@pytest.mark.parametrize("timeout, retries", [(5.0, 20), (0.0, 200)], ids=["sqlite-waits", "store-retries"])
def test_concurrent_writer_processes(tmp_path, timeout, retries):
    """Four spawned processes write at once; every row lands. (With timeout=0 and retries=0 this test fails with
    "database is locked": the second case exercises the store's own retry loop alone.)"""
    workers, runs, epochs = 4, 8, 20
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    processes = [context.Process(target=runpy.run_path, args=(str(script),), kwargs={"init_globals": {
        "STORE_FILE": store_module.__file__, "DB": str(tmp_path / "results.db"), "BARRIER": barrier, "WORKER": w,
        "RUNS": runs, "EPOCHS": epochs, "TIMEOUT": timeout, "RETRIES": retries}})
        for w in range(workers)]
    ResultsStore(tmp_path / "results.db").close()  # create the schema once up front, as a sweep would
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * workers

    with ResultsStore(tmp_path / "results.db") as store:
        finished = store.runs(status="finished")
        expected = [w * 1000 + i for w in range(workers) for i in range(runs)]
        assert sorted(r.metrics["value"] for r in finished) == expected
        for record in finished:
            history = store.history(record.run_id)
            assert [h["epoch"] for h in history] == list(range(epochs))
            assert all(h["worker"] == record.config["worker"] for h in history)
        shared = store.find({"shared": True})
        assert shared.attempts == workers and shared.status == "running"
        assert [h["worker"] for h in store.history(shared.run_id)] == list(range(workers))
        assert len(store.runs()) == workers * runs + 1
