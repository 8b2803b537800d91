"""The trainer against independent references: torch's schedulers, autograd, a bare PyTorch loop, the store."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import nn as nlnn

from normlab.lab.build import build_data, build_model, build_optimizer, norm_scale_parameters
from normlab.lab.callbacks import Callback
from normlab.lab.checkpoint import atomic_save, load_checkpoint
from normlab.lab.config import TrainConfig
from normlab.lab.schedules import ScheduleFactor
from normlab.lab.store import ResultsStore, config_hash
from normlab.lab.trainer import TIMING_KEYS, load_trained, train

TINY = dict(model="resnet20", dataset="synthetic", train_subset=32, test_subset=16, batch_size=16, epochs=2,
            data_kwargs={"image_size": 8, "num_classes": 4}, model_kwargs={"width": 2}, device="cpu")


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


# -- schedules against torch.optim.lr_scheduler ----------------------------------------------------------------
def _torch_factors(make, steps):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


SCHEDULE_CASES = [
    ("cosine", {"min_lr_ratio": 0.1},
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=40, eta_min=0.1)),
    ("step", {"milestones": (0.5, 0.75), "gamma": 0.1},
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[20, 30], gamma=0.1)),
    ("onecycle", {"onecycle_peak": 0.3},
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=40, pct_start=0.3,
                                                   cycle_momentum=False)),
    ("constant", {"warmup_steps": 5},
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=4)),
]


@pytest.mark.parametrize("schedule, options, reference", SCHEDULE_CASES)
def test_schedules_match_torch(schedule, options, reference):
    factor = ScheduleFactor(schedule, 40, **options)
    expected = _torch_factors(reference, 40)
    assert [factor(s) for s in range(40)] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_with_warmup_matches_the_formula():
    factor = ScheduleFactor("cosine", 100, warmup_steps=10)
    for step in range(100):
        expected = (step + 1) / 10 if step < 10 else 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert factor(step) == pytest.approx(expected, rel=1e-12)


# -- config --------------------------------------------------------------------------------------------------------
def test_config_round_trip_and_run_id():
    config = tiny(lr=1, betas=(0.9, 0.99), norm="gn")
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.betas == [0.9, 0.99]
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.run_id == config_hash(config.to_dict())
    assert tiny(lr=1).run_id == tiny(lr=1.0).run_id != tiny(lr=0.5).run_id


CONFIG_ERRORS = [
    ({"model": "resnet21"}, "Valid models"),
    ({"norm": "groupnrom"}, "Valid names"),
    ({"norm": "weight_norm"}, "weight normalization"),
    ({"optimizer": "adam"}, "must be one of"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lr": "fast"}, "must be a number"),
    ({"milestones": [0.8, 0.5]}, "increasing fractions"),
    ({"nesterov": True, "optimizer": "adamw"}, "nesterov"),
    ({"schedule": "onecycle", "warmup_epochs": 1}, "onecycle"),
    ({"model": "char_transformer"}, "shakespeare"),
    ({"weight_norm": "wieght_norm"}, "weight normalization"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
]


@pytest.mark.parametrize("changes, message", CONFIG_ERRORS)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny(**changes)


def test_from_dict_names_the_valid_fields():
    with pytest.raises(ValueError, match="valid fields: model, norm"):
        TrainConfig.from_dict({"modle": "resnet20"})


# -- optimizer, weight decay groups, sparsity ----------------------------------------------------------------
def test_no_decay_norm_exempts_exactly_the_norm_parameters():
    config = tiny(norm="batch_norm", no_decay_norm=True, weight_decay=0.1)
    model = build_model(config)
    optimizer = build_optimizer(config, model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    norms = {id(p) for m in model.modules() if isinstance(m, nlnn.BatchNorm) for p in m.parameters()}
    assert norms and all(decay[i] == 0.0 for i in norms)
    assert all(decay[id(p)] == 0.1 for name, p in model.named_parameters() if p.dim() > 1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_norm_scale_parameters_finds_every_gamma():
    model = build_model(tiny(norm="group_norm"))
    expected = [m.weight for m in model.modules() if isinstance(m, nlnn.GroupNorm)]
    assert len(expected) == 19  # 1 stem + 9 blocks x 2 norms
    assert [id(p) for p in norm_scale_parameters(model)] == [id(p) for p in expected]


# -- the loop against a bare PyTorch loop ----------------------------------------------------------------------
@pytest.mark.parametrize("changes", [
    {"optimizer": "sgd", "nesterov": True, "schedule": "cosine", "label_smoothing": 0.1},
    {"optimizer": "adamw", "lr": 1e-3, "schedule": "step", "no_decay_norm": True},
    {"norm": "group_norm", "sparsity_l1": 1e-2, "schedule": "onecycle"},
])
def test_trainer_equals_a_bare_pytorch_loop(tmp_path, changes):
    config = tiny(epochs=1, **changes)
    data = build_data(config)
    model = build_model(config, data)
    optimizer = build_optimizer(config, model)
    total = config.epochs * len(data.train)
    factor = ScheduleFactor(config.schedule, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    gammas = [m.weight for m in model.modules() if isinstance(m, (nlnn.BatchNorm, nlnn.GroupNorm))]
    for inputs, labels in data.train:
        loss = F.cross_entropy(model(inputs), labels, label_smoothing=config.label_smoothing)
        loss = loss + config.sparsity_l1 * sum(g.abs().sum() for g in gammas)  # network slimming's penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    result = train(config, home=tmp_path, progress=False, verbose=False)
    trained, _ = load_trained(result.run_id, home=tmp_path)
    for (name, ours), reference in zip(trained.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(ours, reference, msg=name)


# -- runs, store and results ---------------------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, ctx):
        self.events.append("start")

    def on_batch_end(self, ctx, loss):
        self.events.append("batch")

    def on_epoch_end(self, ctx, metrics):
        self.events.append("epoch")
        return {"recorded_steps": float(ctx.step)}

    def on_train_end(self, ctx, result):
        self.events.append("end")


def test_run_is_stored_and_not_retrained(tmp_path):
    config = tiny(callbacks=["norm_scales"])
    recorder = Recorder()
    result = train(config, home=tmp_path, callbacks=[recorder], progress=False, verbose=False)
    assert recorder.events == ["start", "batch", "batch", "epoch", "batch", "batch", "epoch", "end"]
    store = ResultsStore(tmp_path / "results.db")
    record = store.get(result.run_id)
    assert record.status == "finished" and record.metrics == pytest.approx(result.metrics)
    history = store.history(result.run_id)
    assert [h["epoch"] for h in history] == [0, 1] and history[1]["recorded_steps"] == 4.0
    assert {"train_loss", "test_acc", "gamma_mean_abs", "lr", *TIMING_KEYS} <= set(history[0])
    assert store.artifacts(result.run_id)["data"]["kind"] == "synthetic"
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["final.pt", "log.txt"]
    again = train(config, home=tmp_path, callbacks=[Recorder()], progress=False, verbose=False)
    assert again.skipped and again.metrics == pytest.approx(result.metrics)
    assert store.get(result.run_id).attempts == 1


def test_load_trained_gives_the_trained_predictions(tmp_path):
    config = tiny(epochs=1, norm="batch_norm")
    result = train(config, home=tmp_path, progress=False, verbose=False)
    model, loaded_config = load_trained(result.run_id[:6], home=tmp_path)
    state = load_checkpoint(result.checkpoint)
    reference = build_model(config, num_outputs=4)
    reference.load_state_dict(state["model"])
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(model(x), reference.eval()(x))
    assert loaded_config == config and not model.training


def test_divergence_is_a_result_not_a_crash(tmp_path):
    config = tiny(norm="none", lr=1e6, weight_decay=0.0, epochs=3)
    result = train(config, home=tmp_path, progress=False, verbose=False)
    assert result.metrics["diverged"] == 1.0 and result.metrics["epochs_completed"] < 3


def test_bf16_channels_last_and_gradient_options_train(tmp_path):
    config = tiny(epochs=1, precision="bf16", channels_last=True, grad_transform="agc", grad_clip=1.0,
                  sparsity_l1=1e-4, norm="batch_norm", weight_norm="weight_standardization")
    result = train(config, home=tmp_path, progress=False, verbose=False)
    assert math.isfinite(result.metrics["train_loss"]) and result.metrics["diverged"] == 0.0


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"a": torch.ones(1)}, path)
    atomic_save({"a": torch.zeros(1)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert load_checkpoint(path)["a"].item() == 0.0


def test_language_model_trains_on_a_text_file(tmp_path):
    text_file = tmp_path / "input.txt"
    text_file.write_text("to be or not to be, that is the question. " * 40)
    config = TrainConfig(model="char_transformer", dataset="shakespeare", norm="rms_norm", norm_placement="post",
                         block_size=16, batch_size=8, steps_per_epoch=3, test_subset=8, epochs=1, optimizer="adamw",
                         lr=1e-3, model_kwargs={"n_layer": 1, "n_embd": 16, "n_head": 2}, device="cpu")
    result = train(config, home=tmp_path / "lab", data_dir=text_file, progress=False, verbose=False)
    assert result.metrics["test_bpc"] == pytest.approx(result.metrics["test_loss"] / math.log(2))
    model, _ = load_trained(config, home=tmp_path / "lab")
    assert model(torch.zeros(1, 16, dtype=torch.long)).shape[-1] == len(set(text_file.read_text()))
