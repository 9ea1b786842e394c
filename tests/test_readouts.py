"""EpisodicMemoryCore: the novelty read-out and the exploration bonus against the memory math."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from episodic_memory import DynamicKanervaMachine, KanervaMachine
from episodic_memory.wrappers.core import EpisodicMemoryCore

SIZE = 8


@pytest.fixture(scope="module")
def identity_coded() -> DynamicKanervaMachine:
    """A vector DKM whose encoder is the identity on non-negative inputs (``z = x``): the test picks the codes."""
    torch.manual_seed(0)
    model = DynamicKanervaMachine((SIZE,), code_size=SIZE, num_slots=6, likelihood="gaussian", hidden_size=SIZE).eval()
    with torch.no_grad():
        for layer in model.encoder.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.copy_(torch.eye(SIZE))
                layer.bias.zero_()
    return model


CODES = 3 * np.eye(SIZE, dtype=np.float32)  # orthogonal codes of norm 3 (σξ = 1): the memory stores what it is shown


def test_the_encoder_is_the_identity(identity_coded):
    with torch.no_grad():
        torch.testing.assert_close(identity_coded.encode(torch.as_tensor(CODES)[None])[0], torch.as_tensor(CODES))


def test_an_episodes_first_observation_earns_exactly_the_coefficient(identity_coded):
    core = EpisodicMemoryCore(identity_coded, 3, readouts=("retrieval",), novelty_reward=0.3)
    core.step(CODES[:3])
    np.testing.assert_array_equal(core.last_bonus, np.full(3, 0.3, np.float32))  # n_t = n⁰_t: the memory is the prior
    core.step(CODES[:3])
    assert (core.last_bonus < 0.3).all()  # the same codes again, from a memory that holds them
    core.reset(np.array([True, False, False]))
    core.step(CODES[:3])
    assert core.last_bonus[0] == np.float32(0.3) and (core.last_bonus[1:] < 0.3).all()


@pytest.mark.parametrize(("old", "other", "new"), [(0, 1, 2), (3, 4, 5), (0, 7, 6)])
def test_a_repeated_observation_earns_less_than_a_new_one(identity_coded, old, other, new):
    """Two memories shown the same two codes, then one of them again and a new one: both ways round, so the
    difference is the memory's, not the codes'."""
    for repeated, unseen in ((old, new), (new, old)):
        core = EpisodicMemoryCore(identity_coded, 2, novelty_reward=1.0)
        core.step(CODES[[repeated, repeated]])
        core.step(CODES[[other, other]])
        core.step(CODES[[repeated, unseen]])
        assert core.last_bonus[0] < 0.6 * core.last_bonus[1]
        assert core.last_bonus[1] > 0.5  # a new code keeps most of its surprise under the prior


def test_without_novelty_reward_no_bonus_but_the_novelty_all_the_same(identity_coded):
    core = EpisodicMemoryCore(identity_coded, 2, readouts=("retrieval",))
    reference = EpisodicMemoryCore(identity_coded, 2, readouts=("novelty",))
    for codes in (CODES[:2], CODES[[0, 2]]):
        assert set(core.step(codes)) == {"retrieval"}
        np.testing.assert_array_equal(core.last_novelty, reference.step(codes)["novelty"][:, 0])
        np.testing.assert_array_equal(core.last_bonus, np.zeros(2, np.float32))


def test_a_km_reads_and_writes_with_its_own_learned_addresses():
    """KM in the wrapper: retrieval = wᵀR_{t−1} and novelty = ½|z − wᵀR|²/σξ² with w = A f(ȳ) (KM eq. 5, 6),
    R_{t−1} the batch posterior (KM eq. 9-11) of the frames before t."""
    torch.manual_seed(0)
    km = KanervaMachine((12,), code_size=6, num_slots=5, likelihood="gaussian", address_size=4, hidden_size=16)
    km = km.double().eval()
    with torch.no_grad():
        km.memory.prior_mean.normal_()  # a non-zero prior, so that the first read is not trivially zero
    x = torch.rand(1, 7, 12, dtype=torch.float64)
    core = EpisodicMemoryCore(km, 1, attractor_steps=3, novelty_reward=0.5)
    with torch.no_grad():
        z, w = km.encode(x), km.address_weights(x)  # [1, T, C], [1, T, K]
        for t in range(x.shape[1]):
            out = core.step(x[:, t])
            prior = km.memory.prior(1)
            state = km.memory.write(prior, z[:, :t], w[:, :t]) if t else prior
            read = km.memory.read(state, w[:, t : t + 1])[0, 0]  # [C]
            read_0 = km.memory.read(prior, w[:, t : t + 1])[0, 0]
            novelty = 0.5 * ((z[0, t] - read) ** 2).sum() / km.memory.obs_noise_var
            novelty_0 = 0.5 * ((z[0, t] - read_0) ** 2).sum() / km.memory.obs_noise_var
            np.testing.assert_allclose(out["memory"][0], state.mean[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["retrieval"][0], read.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["novelty"][0, 0], float(novelty), rtol=1e-5)
            np.testing.assert_allclose(core.last_bonus[0], 0.5 * float(novelty / novelty_0), rtol=1e-5)
