"""swap_norm on Hugging Face models built from a config (no download): Llama's RMSNorm and BERT's LayerNorm."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import swap_norm

transformers = pytest.importorskip("transformers", reason="transformers (the dev extra) is needed for the HF tests")


def _tiny(config_cls, model_cls, **extra):
    config = config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=100, **extra)
    return model_cls(config).eval()


def test_llama_rmsnorm_swaps_to_normlab_rmsnorm_with_identical_outputs():
    torch.manual_seed(0)
    model = _tiny(transformers.LlamaConfig, transformers.LlamaModel, num_key_value_heads=2, rms_norm_eps=1e-5)
    for module in model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            nn.init.normal_(module.weight, 1.0, 0.3)
    ids = torch.randint(0, 100, (2, 7))
    expected = model(input_ids=ids).last_hidden_state
    report = swap_norm(model, "rms_norm", source="LlamaRMSNorm")
    assert len(report) == 5 and all(r.kept == ["weight"] for r in report)
    assert not any(type(m).__name__ == "LlamaRMSNorm" for m in model.modules())
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nlnn.RMSNorm))
    torch.testing.assert_close(model(input_ids=ids).last_hidden_state, expected, rtol=1e-6, atol=1e-6)


def test_bert_layernorm_swaps_to_rmsnorm_keeping_gamma():
    torch.manual_seed(0)
    model = _tiny(transformers.BertConfig, transformers.BertModel)
    M.randomize_norms(model)
    gammas = {p: m.weight.detach().clone() for p, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a BERT swap finds its layers: no "nothing to do" warning
        report = swap_norm(model, "rms_norm")
    assert len(report) == len(gammas) == 5 and all(r.dropped == ["bias"] for r in report)
    for path, gamma in gammas.items():
        assert isinstance(model.get_submodule(path), nlnn.RMSNorm)
        assert torch.equal(model.get_submodule(path).weight.detach(), gamma)
    out = model(input_ids=torch.randint(0, 100, (2, 7))).last_hidden_state
    assert out.shape == (2, 7, 32) and torch.isfinite(out).all()
