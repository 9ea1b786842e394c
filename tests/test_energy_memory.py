"""EBMM (Bartunov et al. 2020): the energy and its gradient in closed form, the write as gradient descent on
eq. 3, the read as projected descent on the energy, meta-gradients, and recall on a meta-trained memory."""

from __future__ import annotations

import math

import pytest
import torch

from episodic_memory import EnergyBasedMemoryMachine, OnlineEnergyMemory
from episodic_memory.energy import ConvolutionalFeatures, Corrupter, EnergyMemory

D, H = 6, 4


def small_memory(seed: int = 0, **options) -> EnergyMemory:
    torch.manual_seed(seed)
    memory = EnergyMemory(D, H, **options).double()
    with torch.no_grad():
        memory.network.initial_bias.normal_()
        memory.network.log_sharpness.fill_(math.log(1.7))
        memory.network.log_well.fill_(math.log(0.3))
        memory.read_step_size.normal_(-1.0, 0.2)
        memory.write_step_size.normal_(-1.0, 0.2)
    return memory


def closed_form_energy(x, W, b, kappa, lam):
    """E(x) = −(1/κ) log Σⱼ exp(κ(Wⱼx + bⱼ)) + (λ/2)‖x‖² and ∇ₓE = −Wᵀ softmax(κh) + λx, for one memory."""
    h = x @ W.T + b  # [N, H]
    energy = -torch.logsumexp(kappa * h, -1) / kappa + 0.5 * lam * (x * x).sum(-1)
    gradient = -torch.softmax(kappa * h, -1) @ W + lam * x  # [N, D]
    return energy, gradient


def test_energy_and_its_gradient_match_the_closed_form():
    memory = small_memory()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, D, generator=g, dtype=torch.float64)
    W = torch.randn(2, H, D, generator=g, dtype=torch.float64)
    b = torch.randn(2, H, generator=g, dtype=torch.float64)
    energy = memory.energy(x, (W, b))
    gradient = memory._energy_and_gradient(x, (W, b), create_graph=False)[1]
    for i in range(2):
        e, grad = closed_form_energy(x[i], W[i], b[i], 1.7, 0.3)
        torch.testing.assert_close(energy[i], e, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gradient[i], grad, rtol=1e-12, atol=1e-12)


def test_one_write_step_is_gradient_descent_on_the_writing_loss_of_eq_3():
    """θ⁽¹⁾ = θ̄ − η ∇θ W, with ∇θ W by central differences of W(x, θ) built from the closed-form gradient."""
    memory = small_memory(write_steps=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, D, generator=g, dtype=torch.float64)
    W0, b0 = (t[0].detach().clone() for t in memory.initial(1))
    alpha, beta = float(memory.gradient_penalty.exp()), float(memory.anchor.exp())

    def writing_loss(W, b):
        energy, gradient = closed_form_energy(x[0], W, b, 1.7, 0.3)
        deviation = ((W - W0) ** 2).sum() + ((b - b0) ** 2).sum()
        return float((energy + alpha * (gradient**2).sum(-1)).mean() + beta * deviation)

    W1, b1 = (t[0] for t in memory.write(x))
    eta_W, eta_b = (float(v) for v in memory.write_step_size.exp()[0])
    eps = 1e-6
    for theta0, theta1, eta, which in ((W0, W1, eta_W, 0), (b0, b1, eta_b, 1)):
        numeric = torch.zeros_like(theta0)
        for index in range(theta0.numel()):
            up, down = theta0.clone().view(-1), theta0.clone().view(-1)
            up[index] += eps
            down[index] -= eps
            args_up = (up.view_as(theta0), b0) if which == 0 else (W0, up.view_as(theta0))
            args_down = (down.view_as(theta0), b0) if which == 0 else (W0, down.view_as(theta0))
            numeric.view(-1)[index] = (writing_loss(*args_up) - writing_loss(*args_down)) / (2 * eps)
        torch.testing.assert_close(theta1, theta0 - eta * numeric, rtol=1e-6, atol=1e-8)


def test_the_read_is_projected_nesterov_descent_on_the_energy():
    memory = small_memory(read_steps=3)
    g = torch.Generator().manual_seed(3)
    theta = tuple(t.detach() for t in memory.write(torch.randn(1, 4, D, generator=g, dtype=torch.float64)))
    query = torch.rand(1, 4, D, generator=g, dtype=torch.float64) * 2 - 1
    known = torch.rand(1, 4, D, generator=g) < 0.4
    read, trajectory = memory.read(query, theta, known, return_trajectory=True)
    gamma, mu = memory.read_step_size.exp().detach(), torch.sigmoid(memory.read_momentum).detach()
    x, v = query[0], torch.zeros(4, D, dtype=torch.float64)
    for k in range(3):
        grad = closed_form_energy(x + mu[k] * v, theta[0][0], theta[1][0], 1.7, 0.3)[1]
        v = mu[k] * v - gamma[k] * grad
        x = torch.where(known[0], query[0], (x + v).clamp(-1, 1))
        torch.testing.assert_close(trajectory[k + 1, 0], x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(read, trajectory[-1])
    assert torch.equal(read[known], query[known]) and read.abs().max() <= 1


def test_meta_gradients_reach_the_initial_weights_and_the_step_sizes():
    """gradcheck of the meta-loss (eq. 2 through the write of eq. 4) in θ̄ = (W̄, b̄), the read's and the write's step sizes."""
    memory = small_memory(read_steps=2, write_steps=2)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, D, generator=g, dtype=torch.float64).sign()
    query = torch.where(torch.rand(2, 3, D, generator=g) < 0.3, -x, x)  # a fixed distortion: gradcheck needs determinism
    names = ["network.initial_weight", "network.initial_bias", "read_step_size", "write_step_size"]
    params = dict(memory.named_parameters())

    def loss(*values):
        overrides = {**params, **dict(zip(names, values, strict=True))}
        return torch.func.functional_call(memory, overrides, (x, lambda _x: (query, None)), strict=False)

    memory.forward = memory.meta_loss  # functional_call calls forward
    inputs = tuple(params[name].detach().clone().requires_grad_() for name in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


def test_bad_input_is_refused():
    memory = small_memory()
    theta = memory.initial(1)
    with pytest.raises(ValueError, match=r"shape \[B, N, D=6\]"):
        memory.write(torch.zeros(1, 3, D + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        memory.read(torch.full((1, 2, D), math.nan, dtype=torch.float64), theta)
    with pytest.raises(ValueError, match="known must be a bool tensor"):
        memory.read(torch.zeros(1, 2, D, dtype=torch.float64), theta, torch.ones(1, 2, D))
    with pytest.raises(ValueError, match="read_steps must be a positive int"):
        EnergyMemory(D, H, read_steps=0)


@pytest.fixture(scope="module")
def trained() -> EnergyMemory:
    """A memory meta-trained for 8 random 32-bit patterns with 8 bits corrupted (a few seconds on one core)."""
    torch.manual_seed(0)
    memory = EnergyMemory(32, 16, read_steps=5, write_steps=5)
    optimizer = torch.optim.Adam(memory.parameters(), lr=3e-3)
    corrupt = Corrupter("entries", 8, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        x = (2 * torch.randint(0, 2, (16, 8, 32), generator=g) - 1).float()
        optimizer.zero_grad()
        memory.meta_loss(x, corrupt).backward()
        optimizer.step()
    return memory


def test_energies_fall_along_the_read_of_a_trained_memory(trained):
    g = torch.Generator().manual_seed(5)
    x = (2 * torch.randint(0, 2, (64, 8, 32), generator=g) - 1).float()
    query, known = Corrupter("entries", 8, generator=g)(x)
    theta = trained.write(x)
    _, trajectory = trained.read(query, theta, known, return_trajectory=True)
    energies = torch.stack([trained.energy(step, theta) for step in trajectory])  # [K+1, B, N]
    assert float((energies[-1] < energies[0]).float().mean()) >= 0.99


def test_write_then_read_returns_the_stored_patterns(trained):
    g = torch.Generator().manual_seed(6)
    x = (2 * torch.randint(0, 2, (64, 8, 32), generator=g) - 1).float()
    theta = trained.write(x)
    query, known = Corrupter("entries", 8, generator=g)(x)
    wrong = (torch.where(trained.read(query, theta, known) >= 0, 1.0, -1.0) != x).sum(-1).float()
    wrong_before = (query != x).sum(-1).float()  # about 4 of the 8 random bits
    assert float(wrong_before.mean()) > 3.5
    assert float(wrong.mean()) < 0.5 and float((wrong == 0).float().mean()) > 0.8
    other = (2 * torch.randint(0, 2, (64, 8, 32), generator=g) - 1).float()  # patterns the memories never saw
    stored_energy, other_energy = trained.energy(x, theta), trained.energy(other, theta)
    assert float((stored_energy < other_energy).float().mean()) > 0.95  # the energy is a novelty signal


def test_corruptions():
    g = torch.Generator().manual_seed(7)
    x = (2 * torch.randint(0, 2, (3, 4, 64), generator=g) - 1).float()
    distorted, known = Corrupter("entries", 10, generator=g)(x)
    assert torch.equal((~known).sum(-1), torch.full((3, 4), 10)) and torch.equal(distorted[known], x[known])
    assert set(distorted.unique().tolist()) <= {-1.0, 1.0}
    frames = torch.rand(2, 3, 3, 8, 8, generator=g)
    blocked, known = Corrupter("block", 4, low=0.0, high=1.0, fill=0.5, generator=g)(frames)
    erased = ~known[:, :, 0]  # [B, N, H, W]
    assert torch.equal(erased.sum((-2, -1)), torch.full((2, 3), 16))
    rows, cols = erased.any(-1).sum(-1), erased.any(-2).sum(-1)
    assert torch.equal(rows, torch.full((2, 3), 4)) and torch.equal(cols, torch.full((2, 3), 4))  # one 4 x 4 square
    assert torch.all(blocked[~known] == 0.5) and torch.equal(blocked[known], frames[known])
    many = torch.rand(4, 50, 400, generator=g)
    noisy, none = Corrupter("salt-and-pepper", 0.2, low=0.0, high=1.0, generator=g)(many)
    changed = noisy != many
    assert none is None and abs(float(changed.float().mean()) - 0.2) < 0.01
    assert set(noisy[changed].unique().tolist()) == {0.0, 1.0}
    noisy, _ = Corrupter("gaussian", 0.1, low=0.0, high=1.0, generator=g)(torch.full_like(many, 0.5))
    assert abs(float((noisy - 0.5).std()) - 0.1) < 0.005  # 5 s.d. from the centre: hardly ever clipped
    noisy, _ = Corrupter("gaussian", 1.0, low=0.0, high=1.0, generator=g)(many)
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0
    with pytest.raises(ValueError, match="kind must be one of"):
        Corrupter("blur", 1)
    with pytest.raises(ValueError, match="does not fit"):
        Corrupter("block", 9)(frames)


# --------------------------------------------------------------------------------------------
# The convolutional energy on frames
# --------------------------------------------------------------------------------------------
def conv_matrix(kernel: torch.Tensor, bias: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-channel 4 x 4 convolution of stride 2, padding 1, on side x side frames, written out as a dense matrix
    ``A [C_out·(side/2)², side²]`` and offset ``a``: output (o, i, j) reads input (2i + u − 1, 2j + v − 1) with weight
    ``kernel[o, 0, u, v]``."""
    out_channels, half = kernel.shape[0], side // 2
    A = torch.zeros(out_channels, half, half, side, side, dtype=kernel.dtype)
    for o in range(out_channels):
        for i in range(half):
            for j in range(half):
                for u in range(4):
                    for v in range(4):
                        r, c = 2 * i + u - 1, 2 * j + v - 1
                        if 0 <= r < side and 0 <= c < side:
                            A[o, i, j, r, c] = kernel[o, 0, u, v]
    return A.reshape(out_channels * half * half, side * side), bias.repeat_interleave(half * half)


def test_the_energy_on_convolutional_features_matches_the_closed_form():
    """One linear convolution f(x) = A x + a: E = −(1/κ) log Σⱼ exp(κ(W(Ax + a) + b)ⱼ) + (λ/2)‖x − ½‖², whose gradient
    is −Aᵀ Wᵀ softmax(κh) + λ(x − ½) (the well at the middle of the box [0, 1])."""
    torch.manual_seed(11)
    features = ConvolutionalFeatures((1, 6, 6), channels=2, layers=1)
    memory = EnergyMemory(36, 3, bounds=(0.0, 1.0), features=features).double()
    with torch.no_grad():
        memory.network.log_sharpness.fill_(math.log(1.3))
        memory.network.log_well.fill_(math.log(0.4))
    conv = features.convolutions[0]
    A, a = conv_matrix(conv.weight.detach(), conv.bias.detach(), 6)  # [18, 36], [18]
    g = torch.Generator().manual_seed(12)
    x = torch.rand(2, 4, 36, generator=g, dtype=torch.float64)
    W = torch.randn(2, 3, 18, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, generator=g, dtype=torch.float64)
    energy, gradient = memory._energy_and_gradient(x, (W, b), create_graph=False)
    for m in range(2):
        h = (x[m] @ A.T + a) @ W[m].T + b[m]  # [N, H]
        expected = -torch.logsumexp(1.3 * h, -1) / 1.3 + 0.2 * ((x[m] - 0.5) ** 2).sum(-1)
        expected_gradient = -torch.softmax(1.3 * h, -1) @ W[m] @ A + 0.4 * (x[m] - 0.5)
        torch.testing.assert_close(energy[m], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gradient[m], expected_gradient, rtol=1e-12, atol=1e-12)
    assert memory.state_floats == 3 * (18 + 1)


def test_convolutional_features_count_and_refuse():
    features = ConvolutionalFeatures((3, 32, 32), channels=16, layers=3)
    assert features.output_size == 16 * 4 * 4 and features(torch.rand(2, 5, 3 * 32 * 32)).shape == (2, 5, 256)
    assert EnergyMemory(3 * 32 * 32, 16, bounds=(0.0, 1.0), features=features).state_floats == 16 * 257
    with pytest.raises(ValueError, match="divisible by 2\\*\\*layers = 8"):
        ConvolutionalFeatures((3, 12, 12), layers=3)
    with pytest.raises(ValueError, match="the features read patterns of 3072, not of input_size 100"):
        EnergyMemory(100, 4, features=features)


def test_meta_gradients_reach_the_convolutions_and_the_rules_through_the_pixel_read():
    """gradcheck of the meta-loss of frames in the convolutions' weights, θ̄ and the step sizes (float64, two SiLU layers)."""
    torch.manual_seed(13)
    memory = EnergyMemory(16, 2, read_steps=2, write_steps=2, bounds=(0.0, 1.0),
                          features=ConvolutionalFeatures((1, 4, 4), channels=2, layers=2)).double()  # fmt: skip
    g = torch.Generator().manual_seed(14)
    x = torch.rand(1, 3, 16, generator=g, dtype=torch.float64)
    query = torch.where(torch.rand(1, 3, 16, generator=g) < 0.3, 0.5, x)  # a fixed distortion
    names = ["network.features.convolutions.0.weight", "network.initial_weight", "read_step_size", "write_step_size"]
    params = dict(memory.named_parameters())

    def loss(*values):
        overrides = {**params, **dict(zip(names, values, strict=True))}
        return torch.func.functional_call(memory, overrides, (x, lambda _x: (query, None)), strict=False)

    memory.forward = memory.meta_loss
    inputs = tuple(params[name].detach().clone().requires_grad_() for name in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.slow  # about 30 s: 300 meta-training steps through convolutions
def test_a_trained_convolutional_memory_descends_its_energy_and_fills_in_blocks():
    """Random binary 8 x 8 frames, sets of 4, a 4 x 4 block set to ½: after meta-training, the read lowers the energy of
    ≥ 99% of the queries, and the written memory fills the blocks in better than the query and than the unwritten θ̄."""
    torch.manual_seed(0)
    memory = EnergyMemory(64, 8, bounds=(0.0, 1.0), features=ConvolutionalFeatures((1, 8, 8), channels=8, layers=2))
    optimizer = torch.optim.Adam(memory.parameters(), lr=3e-3)
    blocks = Corrupter("block", 4, low=0.0, high=1.0, fill=0.5, generator=torch.Generator().manual_seed(1))

    def corrupt(x):
        distorted, known = blocks(x.view(*x.shape[:2], 1, 8, 8))
        return distorted.flatten(2), known.flatten(2)

    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        optimizer.zero_grad()
        memory.meta_loss(torch.randint(0, 2, (16, 4, 64), generator=g).float(), corrupt).backward()
        optimizer.step()
    x = torch.randint(0, 2, (64, 4, 64), generator=g).float()
    query, known = corrupt(x)
    theta = memory.write(x)
    read, trajectory = memory.read(query, theta, return_trajectory=True)
    energies = torch.stack([memory.energy(step, theta) for step in trajectory])  # [K+1, B, N]
    assert float((energies[-1] < energies[0]).float().mean()) >= 0.99
    block_error = lambda y: float((y - x)[~known].pow(2).mean())  # noqa: E731
    assert block_error(query) == 0.25  # ½ against 0 or 1
    assert block_error(read) < 0.7 * block_error(query)
    assert block_error(read) < 0.7 * block_error(memory.read(query, memory.initial(64)))


# --------------------------------------------------------------------------------------------
# The online backend and the machine
# --------------------------------------------------------------------------------------------
def test_the_incremental_backend_writes_what_write_online_writes_and_reads_before_writing():
    memory = small_memory()
    backend = OnlineEnergyMemory(memory, 2, write="incremental")
    g = torch.Generator().manual_seed(8)
    z = torch.randn(2, 5, D, generator=g, dtype=torch.float64)
    for t in range(5):
        before = tuple(p.clone() for p in backend.theta)
        out = backend.step(z[:, t])
        torch.testing.assert_close(out["novelty"], memory.energy(z[:, t : t + 1], before))
        torch.testing.assert_close(out["retrieval"], memory.read(z[:, t : t + 1], before)[:, 0])
        torch.testing.assert_close(out["memory"], before[0])
    for mine, theirs in zip(backend.theta, memory.write_online(z), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert backend.state_floats == H * (D + 1)


def test_the_rewriting_backend_rewrites_with_the_batch_write_and_resets_one_episode():
    memory = small_memory()
    backend = OnlineEnergyMemory(memory, 2, write="rewrite", rewrite_every=3)
    g = torch.Generator().manual_seed(9)
    z = torch.randn(2, 4, D, generator=g, dtype=torch.float64)
    for t in range(2):
        backend.step(z[:, t])
    for mine, theirs in zip(backend.theta, memory.initial(2), strict=True):  # the codes wait for the rewrite
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    backend.step(z[:, 2])
    for mine, theirs in zip(backend.theta, memory.write(z[:, :3]), strict=True):  # eq. 4 on the 3 codes, from θ̄
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    backend.reset(torch.tensor([True, False]))
    torch.testing.assert_close(backend.theta[0][0], memory.initial(1)[0][0], rtol=0, atol=0)  # episode 0 starts again
    assert backend.state_floats == H * (D + 1) + 3 * D  # the codes episode 1 keeps count
    for _ in range(3):
        backend.step(z[:, 3])  # episode 0 reaches 3 codes: rewritten from its own codes alone
    torch.testing.assert_close(backend.theta[0][0], memory.write(z[:1, 3:4].expand(1, 3, D))[0][0], rtol=1e-12, atol=1e-12)
    mask = torch.tensor([[True] * 6])
    episode_1 = torch.cat([z[1:, :3], z[1:, 3:4].expand(1, 3, D)], 1)  # its 6 codes: rewritten at 6
    torch.testing.assert_close(backend.theta[0][1], memory.write(episode_1, mask=mask)[0][0], rtol=1e-12, atol=1e-12)


def test_a_masked_write_ignores_the_patterns_left_out():
    memory = small_memory()
    g = torch.Generator().manual_seed(10)
    z = torch.randn(1, 4, D, generator=g, dtype=torch.float64)
    masked = memory.write(torch.cat([z[:, :2], torch.randn(1, 2, D, generator=g, dtype=torch.float64)], 1),
                          mask=torch.tensor([[True, True, False, False]]))  # fmt: skip
    for mine, theirs in zip(masked, memory.write(z[:, :2]), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("write_mode", ["batch", "online"])
def test_the_machine_writes_its_codes_and_its_objective_reaches_the_coders_and_the_rules(write_mode):
    torch.manual_seed(0)
    machine = EnergyBasedMemoryMachine((6, 6, 3), code_size=8, num_slots=4, likelihood="logistic",
                                       hidden_channels=4, write_mode=write_mode).double()  # fmt: skip
    x = torch.randint(0, 256, (2, 3, 6, 6, 3), dtype=torch.uint8)
    z = machine.encode(x)
    expected = machine.memory.write_online(z) if write_mode == "online" else machine.memory.write(z)
    for mine, theirs in zip(machine.write(x), expected, strict=True):
        torch.testing.assert_close(mine, theirs)
    machine.loss(x)["loss"].backward()
    named = dict(machine.named_parameters())
    for name in ("memory.network.initial_weight", "memory.read_step_size", "memory.write_step_size", "memory.anchor"):
        assert named[name].grad is not None and bool(named[name].grad.abs().sum() > 0), name
    assert all(p.grad is not None for p in machine.encoder.parameters())
    assert machine.config["corruption"] == "block" and machine.config["corruption_amount"] == 3
