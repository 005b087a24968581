"""The CSRA head computes CSRA's formula (docs/papers.md): mean + lam * attention, summed over H heads."""

import math

import pytest
import torch

from models.csra import HEAD_TEMPERATURES, CSRAHead, MultiHeadCSRA


def direct_csra(x: torch.Tensor, weight: torch.Tensor, temperature: float, lam: float) -> torch.Tensor:
    """The formula written out with einsum, independent of the module's conv."""
    w = weight[:, :, 0, 0]
    w = w / w.norm(dim=1, keepdim=True)
    s = torch.einsum("cd,bdhw->bchw", w, x).flatten(2)
    base = s.mean(dim=2)
    if math.isinf(temperature):
        att = s.max(dim=2).values
    else:
        a = torch.exp(temperature * s)
        att = (s * a / a.sum(dim=2, keepdim=True)).sum(dim=2)
    return base + lam * att


@pytest.mark.parametrize("temperature", [1.0, 3.0, math.inf])
def test_single_head_matches_formula(temperature: float) -> None:
    torch.manual_seed(0)
    head = CSRAHead(16, 5, temperature, lam=0.3)
    x = torch.randn(2, 16, 7, 6)
    expected = direct_csra(x, head.head.weight.detach(), temperature, 0.3)
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


def test_reference_99_means_infinity() -> None:
    torch.manual_seed(1)
    head = CSRAHead(8, 3, 99, lam=1.0)
    x = torch.randn(1, 8, 4, 4)
    expected = direct_csra(x, head.head.weight.detach(), math.inf, 1.0)
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("heads", [1, 2, 4, 6, 8])
def test_multi_head_sums_heads_with_reference_temperatures(heads: int) -> None:
    torch.manual_seed(heads)
    mh = MultiHeadCSRA(12, 4, heads=heads, lam=0.4)
    x = torch.randn(3, 12, 5, 5)
    expected = sum(
        direct_csra(x, h.head.weight.detach(), t, 0.4)
        for h, t in zip(mh.multi_head, HEAD_TEMPERATURES[heads], strict=True)
    )
    assert [h.temperature for h in mh.multi_head] == HEAD_TEMPERATURES[heads]
    torch.testing.assert_close(mh(x), expected, rtol=1e-5, atol=1e-5)


def test_temperature_lists_are_the_reference_ones() -> None:
    inf = math.inf
    assert {
        1: [1], 2: [1, inf], 4: [1, 2, 4, inf], 6: [1, 2, 3, 4, 5, inf], 8: [1, 2, 3, 4, 5, 6, 7, inf],
    } == HEAD_TEMPERATURES


def test_features_are_not_normalised_only_weights() -> None:
    head = CSRAHead(4, 2, 1.0, lam=0.0)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(head(2 * x), 2 * head(x))
    with torch.no_grad():
        head.head.weight.mul_(5.0)
    torch.testing.assert_close(head(x), head(x) * 1.0)
    ref = direct_csra(x, head.head.weight.detach() / 5.0, 1.0, 0.0)
    torch.testing.assert_close(head(x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("heads", [0, 3, 5, 7, 16])
def test_unsupported_head_count_is_a_clear_error(heads: int) -> None:
    with pytest.raises(ValueError, match=r"heads in \[1, 2, 4, 6, 8\]"):
        MultiHeadCSRA(8, 2, heads=heads)
