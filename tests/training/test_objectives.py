"""MSL loss, L_sw size weights and EWC against hand computations from the papers (docs/papers.md)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from training.objectives import EWC, labelled_bce, msl_loss, size_balanced_ce, size_weights


class TinyLinear(nn.Module):
    """logits = W · mean_pixels(x): small enough to compute the MSL loss by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))[:, :2] @ self.w.T


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_msl_loss_matches_hand_computation() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    x[0, 1] = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    holes = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # hides pixel (0, 0)
    y = torch.tensor([[1.0, 0.0]])
    model = TinyLinear()
    parts = msl_loss(model, x, y, holes)
    # clean channel means (1, 1); masked: (0.75, 0.5)
    clean = [1 * 1 - 2 * 1, 0.5 * 1 + 0.25 * 1]
    masked = [1 * 0.75 - 2 * 0.5, 0.5 * 0.75 + 0.25 * 0.5]
    l1 = (bce(clean[0], 1) + bce(clean[1], 0)) / 2
    l2 = (bce(masked[0], 1) + bce(masked[1], 0)) / 2
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    l3 = ((sig(clean[0]) - sig(masked[0])) ** 2 + (sig(clean[1]) - sig(masked[1])) ** 2) / 2
    assert parts.clean_bce.item() == pytest.approx(l1, rel=1e-6)
    assert parts.masked_bce.item() == pytest.approx(l2, rel=1e-6)
    assert parts.consistency.item() == pytest.approx(l3, rel=1e-6)
    assert parts.total.item() == pytest.approx(0.3 * l1 + 0.2 * l2 + 0.5 * l3, rel=1e-6)


def test_difficult_labels_drop_out_of_both_bce_terms_but_not_the_consistency_term() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0
    x[0, 1] = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    holes = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([[1.0, 0.0]])
    known = torch.tensor([[True, False]])  # class 1 difficult: neither positive nor negative
    model = TinyLinear()
    parts = msl_loss(model, x, y, holes, known=known)
    clean, masked = [-1.0, 0.75], [-0.25, 0.5]  # as in the hand computation above
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert parts.clean_bce.item() == pytest.approx(bce(clean[0], 1), rel=1e-6)
    assert parts.masked_bce.item() == pytest.approx(bce(masked[0], 1), rel=1e-6)
    l3 = ((sig(clean[0]) - sig(masked[0])) ** 2 + (sig(clean[1]) - sig(masked[1])) ** 2) / 2
    assert parts.consistency.item() == pytest.approx(l3, rel=1e-6)


def test_labelled_bce_averages_over_known_entries_only() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    known = torch.tensor([[True, False], [True, True]])
    expected = (bce(0.0, 1) + bce(-1.0, 0) + bce(3.0, 1)) / 3
    assert labelled_bce(logits, targets, known).item() == pytest.approx(expected, rel=1e-6)
    everything = (bce(0.0, 1) + bce(2.0, 0) + bce(-1.0, 0) + bce(3.0, 1)) / 4
    assert labelled_bce(logits, targets).item() == pytest.approx(everything, rel=1e-6)
    assert labelled_bce(logits, targets, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


def test_msl_gradient_flows_through_both_branches_of_the_consistency_term() -> None:
    model = TinyLinear()
    x = torch.rand(2, 3, 4, 4)
    holes = (torch.rand(2, 4, 4) > 0.5).float()
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    parts = msl_loss(model, x, y, holes, weights=(0.0, 0.0, 1.0))
    (grad,) = torch.autograd.grad(parts.total, model.w)
    clean, masked = model(x), model(x * (1 - holes[:, None]))
    detached = ((torch.sigmoid(clean) - torch.sigmoid(masked).detach()) ** 2).mean()
    (grad_detached,) = torch.autograd.grad(detached, model.w)
    assert not torch.allclose(grad, grad_detached)


def test_size_weights_for_a_big_and_a_small_component() -> None:
    labels = np.zeros((60, 80), dtype=np.uint8)
    labels[5:45, 5:45] = 3  # 1600 px
    labels[50:55, 60:65] = 3  # 25 px, same class, separate component
    labels[0, :] = 255
    w = size_weights(labels, tau=5.0)
    n_fg = 1625
    assert w[20, 20] == pytest.approx(n_fg / 1600)  # 1.015625
    assert w[52, 62] == pytest.approx(5.0)  # 1625 / 25 = 65, capped at tau
    assert w[58, 2] == 1.0 and w[0, 10] == 0.0
    assert size_weights(labels, tau=100.0)[52, 62] == pytest.approx(65.0)


def test_size_balanced_ce_is_weighted_mean() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2 classes, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    weights = torch.tensor([[[1.0, 3.0]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(0) + math.exp(1)))
    expected = (1 * ce0 + 3 * ce1) / 4
    assert size_balanced_ce(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)


def test_ewc_penalty_matches_the_supplement_formula_by_hand() -> None:
    # L_sb supplement eq. 1: sum_i lam/2 F_i (theta_i - theta*_i)^2, F the unnormalised mean squared gradient.
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    ewc = EWC(lam=10.0)
    # loss = w . x  ->  gradient = x; two steps with x = (1, 2) and (3, 0): mean squared gradient (5, 2).
    for x in ([1.0, 2.0], [3.0, 0.0]):
        model.zero_grad()
        model(torch.tensor([x])).sum().backward()
        ewc.accumulate(model)
    ewc.consolidate(model)
    torch.testing.assert_close(ewc.fisher["weight"], torch.tensor([[5.0, 2.0]]))  # not max-normalised
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.5, -2.0]]))  # delta = (0.5, -1)
    expected = 10.0 / 2 * (5.0 * 0.5**2 + 2.0 * 1.0**2)  # 16.25
    assert ewc.penalty(model).item() == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(ewc.penalty(model), model.weight)
    torch.testing.assert_close(grad, torch.tensor([[10.0 * 5.0 * 0.5, 10.0 * 2.0 * -1.0]]))  # lam * F * delta
    assert ewc.max_curvature() == pytest.approx(50.0)


def test_ewc_changes_the_gradient_by_exactly_lambda_f_delta() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ewc = EWC(lam=500.0)
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        ewc.accumulate(model)
    ewc.consolidate(model)
    assert ewc.active
    with torch.no_grad():
        model.weight.add_(0.1)
    x = torch.randn(8, 4)
    task = model(x).pow(2).mean()
    (g_task,) = torch.autograd.grad(task, model.weight)
    (g_total,) = torch.autograd.grad(model(x).pow(2).mean() + ewc.penalty(model), model.weight)
    expected = g_task + 500.0 * ewc.fisher["weight"] * 0.1
    torch.testing.assert_close(g_total, expected, rtol=1e-5, atol=1e-5)
    assert (g_total - g_task).abs().max() > 1.0


def test_masked_pass_leaves_batchnorm_running_statistics_to_the_clean_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    x, y = torch.rand(4, 3, 8, 8) + 0.5, torch.tensor([[1.0, 0.0]] * 4)
    holes = torch.zeros(4, 8, 8)
    holes[:, :, :6] = 1  # 75% of every image hidden: its batch statistics differ a lot from the clean ones
    reference = [m.clone() for m in model[1].state_dict().values()]
    model.train()
    msl_loss(model, x, y, holes, masked_bn="clean")
    after_clean = {k: v.clone() for k, v in model[1].state_dict().items()}
    # Oracle: one clean forward pass from the same starting statistics.
    for tensor, value in zip(model[1].state_dict().values(), reference, strict=True):
        tensor.copy_(value)
    model(x)
    for key, value in model[1].state_dict().items():
        torch.testing.assert_close(after_clean[key], value)
    for tensor, value in zip(model[1].state_dict().values(), reference, strict=True):
        tensor.copy_(value)
    msl_loss(model, x, y, holes, masked_bn="update")  # both passes folded in: the mean moves elsewhere
    assert (model[1].running_mean - after_clean["running_mean"]).abs().max() > 0.01
    assert model[1].momentum == 0.1  # restored after the masked pass


def test_ewc_needs_gradients_before_consolidating() -> None:
    with pytest.raises(ValueError, match="no gradients accumulated"):
        EWC().consolidate(nn.Linear(2, 2))
