"""The float64 references get their own small tests against hand-computed values and torch.nn."""

import torch

import reference as ref


def test_batch_norm_reference_by_hand():
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # mean 2, biased var 1
    y = ref.batch_norm(x, None, None, eps=0.0)
    assert y.flatten().tolist() == [-1.0, 1.0]


def test_rms_norm_reference_by_hand():
    y = ref.rms_norm(torch.tensor([[3.0, 4.0]], dtype=torch.float64), None, eps=0.0)
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64) / (12.5**0.5)
    torch.testing.assert_close(y.flatten(), expected)


def test_group_norm_reference_matches_torch():
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    w, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    expected = torch.nn.functional.group_norm(x, 3, w, b, 1e-5)
    torch.testing.assert_close(ref.group_norm(x, w, b, 1e-5, groups=3), expected)


def test_layer_norm_2d_reference_matches_permuted_torch_layer_norm():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ref.layer_norm_2d(x, None, None, 1e-5), expected)
