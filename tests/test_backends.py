"""The memory backends: the interface's contract for every backend, and each classical memory against its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from episodic_memory import DynamicKanervaMachine, KanervaMachine, KanervaMemory, KanervaPlusPlus, ProductKanervaMachine
from episodic_memory.backends import (
    DenseAssociativeMemory,
    HopfieldMemory,
    MemoryBackend,
    ReadoutSpec,
    SparseDistributedMemory,
    binary_patterns,
    radius_for_activation,
)
from episodic_memory.registry import BACKENDS as BACKENDS_BY_NAME

B, C = 3, 16

BACKENDS = {
    "hebb": lambda **kw: HopfieldMemory(B, C, rule="hebb", **kw),
    "storkey": lambda **kw: HopfieldMemory(B, C, rule="storkey", **kw),
    "pseudo-inverse": lambda **kw: HopfieldMemory(B, C, rule="pseudo-inverse", **kw),
    "hopfield-sync": lambda **kw: HopfieldMemory(B, C, rule="hebb", update="sync", **kw),
    "sdm": lambda **kw: SparseDistributedMemory(B, C, num_locations=128, **kw),
    "store-everything": lambda **kw: DenseAssociativeMemory(B, C, capacity=2, **kw),
}


def signs(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (2 * torch.randint(0, 2, shape, generator=generator) - 1).to(torch.float64)


# --------------------------------------------------------------------------------------------
# The contract, for every backend: each class above, and every backend of the registry as the wrappers build it
# --------------------------------------------------------------------------------------------
def small_machine(kind: type) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {
        KanervaMachine: {"address_size": 4},
        ProductKanervaMachine: {"num_memories": 2},
        KanervaPlusPlus: {"memory_channels": 3, "window": 2},
    }.get(kind, {})
    slots = {ProductKanervaMachine: 6, KanervaPlusPlus: 9}.get(kind, 5)
    machine = kind((12,), code_size=C, num_slots=slots, likelihood="gaussian", hidden_size=16, **options)
    with torch.no_grad():
        for memory in machine.modules():
            if isinstance(memory, KanervaMemory):
                memory.prior_mean.normal_()  # a non-zero prior, so that reads differ from codes
    return machine.double().eval()


def registry_backend(name: str) -> MemoryBackend:
    kind = BACKENDS_BY_NAME[name]
    return kind.build(small_machine(kind.machine or DynamicKanervaMachine), B, 3)


@pytest.fixture(params=[*sorted(BACKENDS), *(f"registry:{name}" for name in BACKENDS_BY_NAME)])
def make(request):
    if request.param.startswith("registry:"):
        return lambda: registry_backend(request.param.removeprefix("registry:"))
    return lambda: BACKENDS[request.param](dtype=torch.float64)


def codes(memory: MemoryBackend, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(memory.batch_size, memory.code_size, generator=generator, dtype=torch.float64)


def test_step_returns_the_declared_readouts_in_shape(make):
    memory = make()
    assert isinstance(memory, MemoryBackend)
    out = memory.step(codes(memory))
    assert set(out) == set(memory.readout_specs)
    for name, spec in memory.readout_specs.items():
        assert out[name].shape == (B, *spec.shape), name
        assert out[name].dtype == torch.float64
        assert bool(torch.isfinite(out[name]).all()), name
        if name == "novelty" and memory.nonnegative_novelty:
            assert bool((out[name] >= 0).all())


@pytest.mark.parametrize("name", sorted(BACKENDS_BY_NAME))
def test_the_registry_declares_each_backends_readouts(name):
    assert tuple(registry_backend(name).readout_specs) == BACKENDS_BY_NAME[name].readouts


def test_asking_for_some_readouts_gives_those_values_and_the_same_write(make):
    asked, full = make(), make()
    for seed in range(3):
        z = codes(asked, seed)
        some = asked.step(z, readouts=["novelty"])
        every = full.step(z)
        assert list(some) == ["novelty"] and torch.equal(some["novelty"], every["novelty"])
    z = codes(asked, 9)
    assert all(torch.equal(asked.step(z, write=False)[k], v) for k, v in full.step(z, write=False).items())
    with pytest.raises(ValueError, match="unknown read-outs \\['code'\\]"):
        asked.step(z, readouts=["code"])


def test_reads_come_before_the_write_and_reset_masks_only_the_chosen_memories(make):
    memory, fresh = make(), make()
    z = codes(memory)
    first = memory.step(z)
    assert all(torch.equal(first[k], v) for k, v in fresh.step(z, write=False).items())  # an empty memory's read-outs
    again = memory.step(z, write=False)
    assert not torch.equal(again["novelty"], first["novelty"])  # the code is in the memory now
    memory.reset(torch.tensor([True, False, True]))
    after = memory.step(z, write=False)
    for k in first:
        assert torch.equal(after[k][[0, 2]], first[k][[0, 2]]), k  # back to empty
        assert torch.equal(after[k][1], again[k][1]), k  # untouched
    memory.reset()
    assert all(torch.equal(memory.step(z, write=False)[k], first[k]) for k in first)


def test_same_inputs_same_readouts(make):
    runs = []
    for _ in range(2):
        memory = make()
        runs.append([memory.step(codes(memory, seed)) for seed in range(6)])
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_codes_are_refused_and_leave_the_memory_as_it_was(make):
    memory = make()
    z = codes(memory)
    memory.step(z)
    before = memory.step(z, write=False)
    bad = z.clone()
    bad[1, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        memory.step(bad)
    with pytest.raises(ValueError, match=rf"shape \[B=3, C={memory.code_size}\]"):
        memory.step(z[:, :-1])
    with pytest.raises(ValueError, match="dtype"):
        memory.step(z.float())
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        memory.reset(torch.ones(B))
    assert all(torch.equal(memory.step(z, write=False)[k], before[k]) for k in before)


def test_readout_spec_checks_its_shape():
    assert ReadoutSpec((4, 8), "rows").shape == (4, 8)
    with pytest.raises(ValueError, match="energy read-out has shape"):
        ReadoutSpec((2,), "energy")
    with pytest.raises(ValueError, match="kind must be one of"):
        ReadoutSpec((2,), "vector")
    with pytest.raises(ValueError, match="2 positive dimension"):
        ReadoutSpec((4,), "rows")


# --------------------------------------------------------------------------------------------
# Hopfield networks
# --------------------------------------------------------------------------------------------
def test_hebb_rule_is_the_sum_of_outer_products_without_the_diagonal():
    X = signs(B, 5, C)
    memory = HopfieldMemory(B, C, rule="hebb", dtype=torch.float64)
    for n in range(5):
        memory.write(X[:, n])
    expected = np.einsum("bnc,bnd->bcd", X.numpy(), X.numpy()) / C
    for b in range(B):
        np.fill_diagonal(expected[b], 0.0)
    np.testing.assert_allclose(memory.weights.numpy(), expected, atol=1e-12)
    z = torch.randn(B, C, dtype=torch.float64)
    np.testing.assert_allclose(memory.step(z)["memory"].numpy(), expected, atol=1e-12)  # W before this step's write
    assert not torch.equal(memory.weights, torch.from_numpy(expected))


def test_storkey_rule_matches_its_definition_written_out_unit_by_unit():
    X = signs(1, 4, C, seed=1)[0].numpy()
    W = np.zeros((C, C))
    for x in X:
        h = [sum(W[i, k] * x[k] for k in range(C) if k != i) for i in range(C)]  # local field h_i = Σ_{k≠i} W_ik x_k
        W = W + np.array([[(x[i] * x[j] - x[i] * h[j] - h[i] * x[j]) / C for j in range(C)] for i in range(C)])
        np.fill_diagonal(W, 0.0)
    memory = HopfieldMemory(1, C, rule="storkey", dtype=torch.float64)
    for x in X:
        memory.write(torch.from_numpy(x)[None])
    np.testing.assert_allclose(memory.weights[0].numpy(), W, atol=1e-12)


def test_pseudo_inverse_rule_is_the_projection_onto_the_patterns_and_stores_them_as_fixed_points():
    X = signs(B, 9, C, seed=2)
    memory = HopfieldMemory(B, C, rule="pseudo-inverse", update="sync", dtype=torch.float64)
    for n in range(9):
        memory.write(X[:, n])
        memory.write(X[:, n])  # a pattern in the span already changes nothing
    for b in range(B):
        Xb = X[b].numpy().T  # [C, N]
        P = Xb @ np.linalg.pinv(Xb)
        np.testing.assert_allclose(memory.weights[b].numpy(), P - np.diag(np.diag(P)), atol=1e-10)
    # W x = (P − diag P) x = (1 − P_ii) x_i for a stored x, and P_ii < 1: every stored pattern is a fixed point.
    assert torch.equal(memory.retrieve(X), X)


def test_hopfield_energy_is_minus_half_xWx_and_one_stored_pattern_is_recalled_from_half_its_bits():
    X = signs(B, 1, C, seed=3)
    memory = HopfieldMemory(B, C, rule="hebb", dtype=torch.float64)
    memory.write(X[:, 0])
    query = signs(B, 2, C, seed=4)
    W = memory.weights.numpy()
    expected = -0.5 * np.einsum("bnc,bcd,bnd->bn", query.numpy(), W, query.numpy())
    np.testing.assert_allclose(memory.energy(query).numpy(), expected, atol=1e-12)
    half = X.clone()
    half[..., : C // 2] = 0.0  # erased
    assert torch.equal(memory.retrieve(half), X)
    assert memory.energy(X)[:, 0].tolist() == [-(C - 1) / 2] * B  # −½ Σ_{i≠j} x_i x_j / C


def test_known_bits_are_held_during_retrieval():
    memory = HopfieldMemory(1, C, rule="hebb", dtype=torch.float64)
    memory.write(signs(1, C, seed=5))
    query = signs(1, 1, C, seed=6)
    known = torch.zeros(1, 1, C, dtype=torch.bool)
    known[..., :5] = True
    out = memory.retrieve(query, known)
    assert torch.equal(out[..., :5], query[..., :5])


# --------------------------------------------------------------------------------------------
# Sparse distributed memory
# --------------------------------------------------------------------------------------------
def test_sdm_selects_the_locations_within_the_hamming_radius():
    memory = SparseDistributedMemory(1, C, num_locations=200, radius=6, dtype=torch.float64)
    x = signs(1, 3, C, seed=7)
    hamming = (x[0].numpy()[:, None, :] != memory.addresses.numpy()[None]).sum(-1)  # [3, L]
    np.testing.assert_array_equal(memory.select(x)[0].numpy(), (hamming <= 6).astype(float))


def test_sdm_with_every_location_selected_reads_the_majority_vote_of_the_stored_patterns():
    memory = SparseDistributedMemory(1, C, num_locations=10, radius=C, read_iterations=1, dtype=torch.float64)
    X = signs(1, 5, C, seed=8)
    for n in range(5):
        memory.write(X[:, n])
    majority = torch.sign(X.sum(1, keepdim=True))  # 5 patterns: never a tie
    assert torch.equal(memory.retrieve(signs(1, 1, C, seed=9)), majority)
    assert memory.state_floats == 10 * (C + 1)


def test_sdm_radius_for_activation_is_the_binomial_quantile():
    tau = radius_for_activation(128, 0.1)
    cdf = lambda t: sum(math.comb(128, k) for k in range(t + 1)) / 2**128  # noqa: E731
    assert cdf(tau) <= 0.1 < cdf(tau + 1)


# --------------------------------------------------------------------------------------------
# Dense associative memory (store everything)
# --------------------------------------------------------------------------------------------
def test_store_everything_reads_the_softmax_of_every_stored_code_and_its_energy():
    beta = 0.7
    memory = DenseAssociativeMemory(B, C, beta=beta, steps=1, capacity=2, dtype=torch.float64)
    X = torch.randn(B, 7, C, dtype=torch.float64)
    for n in range(7):  # past the first capacity of 2 rows
        memory.write(X[:, n])
    q = torch.randn(B, 2, C, dtype=torch.float64)
    Xn, qn = X.numpy(), q.numpy()
    scores = beta * np.einsum("bqc,bnc->bqn", qn, Xn)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(memory.retrieve(q).numpy(), np.einsum("bqn,bnc->bqc", p, Xn), atol=1e-12)
    lse = np.log(np.exp(scores).sum(-1)) / beta
    M_sq = (Xn**2).sum(-1).max(-1)
    energy = -lse + 0.5 * (qn**2).sum(-1) + (np.log(7) / beta + 0.5 * M_sq)[:, None]
    np.testing.assert_allclose(memory.energy(q).numpy(), energy, atol=1e-10)
    assert memory.state_floats == 7 * C


def test_store_everything_with_a_large_beta_returns_the_nearest_code_and_an_empty_memory_the_query():
    memory = DenseAssociativeMemory(1, C, beta=50.0, dtype=torch.float64)
    q = torch.randn(1, 1, C, dtype=torch.float64)
    assert torch.equal(memory.retrieve(q), q)
    X = signs(1, 4, C, seed=10)
    for n in range(4):
        memory.write(X[:, n])
    noisy = X[:, 2:3] + 0.3 * torch.randn(1, 1, C, dtype=torch.float64)
    torch.testing.assert_close(memory.retrieve(noisy), X[:, 2:3])


def test_binary_patterns_maps_zero_to_plus_one():
    assert binary_patterns(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [-1.0, 1.0, 1.0]
