"""Observation models against closed forms: the discretised logistic is a pmf over 256 levels."""

import pytest
import torch

from episodic_memory import DynamicKanervaMachine
from episodic_memory.models.likelihoods import DiscretisedLogisticLikelihood, make_likelihood

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def logistic_cdf(v: torch.Tensor, loc: torch.Tensor, scale: float) -> torch.Tensor:
    return 1 / (1 + torch.exp(-(v - loc) / scale))


def reference_log_mass(x: torch.Tensor, loc: torch.Tensor, scale: float) -> torch.Tensor:
    """``ln[F(x + ½/255) − F(x − ½/255)]`` with ``F(−∞) = 0`` below level 0 and ``F(+∞) = 1`` above level 255."""
    h = 0.5 / 255
    upper = torch.where(x >= 1 - h, torch.ones_like(x), logistic_cdf(x + h, loc, scale))
    lower = torch.where(x <= h, torch.zeros_like(x), logistic_cdf(x - h, loc, scale))
    # above the location, 1 − F is the accurate side: F(b) − F(a) = (1 − F(a)) − (1 − F(b))
    upper_sf = torch.where(x >= 1 - h, torch.zeros_like(x), logistic_cdf(-(x + h), -loc, scale))
    lower_sf = torch.where(x <= h, torch.ones_like(x), logistic_cdf(-(x - h), -loc, scale))
    return torch.log(torch.where(x > loc, lower_sf - upper_sf, upper - lower))


def likelihood(scale: float) -> DiscretisedLogisticLikelihood:
    return DiscretisedLogisticLikelihood(init_scale=scale).double()


@pytest.mark.parametrize("scale", [0.002, 0.05, 0.7])
def test_masses_of_all_levels_sum_to_one(scale):
    loc = torch.tensor([-0.3, 0.0, 0.123, 0.5, 0.999, 1.4], dtype=torch.float64)
    lik = likelihood(scale)
    x = LEVELS.view(256, 1).expand(256, loc.numel())  # every level for every location
    masses = lik._log_masses(loc.expand_as(x), x).exp()
    torch.testing.assert_close(masses.sum(0), torch.ones_like(loc), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.01, 0.1])
def test_log_prob_equals_cdf_differences(scale):
    gen = torch.Generator().manual_seed(0)
    loc = torch.rand(5, 3, 4, 4, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    x = torch.randint(0, 256, (5, 3, 4, 4), generator=gen).double() / 255
    x[0, 0, 0] = 0.0  # both end bins present
    x[0, 0, 1] = 1.0
    lik = likelihood(scale)
    expected = reference_log_mass(x, loc, float(lik.scale.detach())).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(loc, x), expected, rtol=1e-9, atol=1e-9)


def test_log_prob_stays_finite_far_from_the_location():
    lik = likelihood(1e-3)
    x = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    loc = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)  # each level far in the logistic's tail
    log_p = lik._log_masses(loc, x)
    assert torch.isfinite(log_p).all()
    assert (log_p < -100).all()  # and very improbable, as it should be


def test_mode_is_the_most_probable_interior_level():
    gen = torch.Generator().manual_seed(1)
    for scale in (0.003, 0.05, 0.4):
        lik = likelihood(scale)
        loc = torch.rand(50, generator=gen, dtype=torch.float64) * 1.4 - 0.2
        interior = LEVELS[1:-1].view(254, 1).expand(254, 50)  # every bin of width 1/255
        best = interior[lik._log_masses(loc.expand_as(interior), interior).argmax(0), 0]
        inside = (loc >= 1.5 / 255) & (loc <= 253.5 / 255)  # the level at μ is an interior one
        torch.testing.assert_close(lik.mode(loc)[inside], best[inside], rtol=0, atol=0)
        torch.testing.assert_close(lik.mode(loc)[loc < 0], torch.zeros_like(loc[loc < 0]))  # clamped, not extrapolated
        torch.testing.assert_close(lik.mode(loc)[loc > 1], torch.ones_like(loc[loc > 1]))


def test_mean_is_the_expected_level():
    lik = likelihood(0.08)
    loc = torch.tensor([-0.2, 0.03, 0.5, 0.97, 1.3], dtype=torch.float64)
    x = LEVELS.view(256, 1).expand(256, 5)
    expected = (lik._log_masses(loc.expand_as(x), x).exp() * x).sum(0)
    torch.testing.assert_close(lik.mean(loc), expected, rtol=0, atol=1e-12)


def test_scale_is_learned_and_sharpens_on_exact_reconstructions():
    lik = make_likelihood("logistic")
    x = torch.randint(0, 256, (8, 3, 4, 4)).float() / 255
    optimizer = torch.optim.Adam(lik.parameters(), lr=0.1)
    before = float(lik.scale.detach())
    for _ in range(200):
        loss = -lik.log_prob(x, x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(lik.scale.detach()) < before / 2
    assert float(-lik.log_prob(x, x).mean().detach()) < 3 * 16 * 0.05  # near-certain: well under 0.05 nats per element


def test_dkm_with_logistic_likelihood_gives_a_valid_bound_and_rejects_out_of_range_frames():
    model = DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, likelihood="logistic", hidden_channels=4)
    x = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)
    losses = model.loss(x)
    assert float(losses["nll"].detach()) > 0  # −ln of a probability mass, never negative
    assert float(losses["cond_elbo"].detach()) < 0
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\] for a DiscretisedLogisticLikelihood"):
        model.loss(x.float())  # 0..255 floats, not scaled
