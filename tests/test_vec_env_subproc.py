"""VecEpisodicMemory over a real SubprocVecEnv ("spawn" workers) equals it over a DummyVecEnv.

Same seeds, same actions: observations, rewards, dones, infos, read-outs and the memories themselves
must be identical, across episode ends too (terminal observations transformed from the finished
episode's memory, that memory back to the prior).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from episodic_memory import DynamicKanervaMachine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

FRAME = 8
MAX_STEPS = (3, 5)  # both sub-environments end (by time limit at the latest) at different steps
STEPS = 12
SEED = 7


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def run(venv: VecEnv, dkm: DynamicKanervaMachine, actions: np.ndarray) -> list[dict]:
    """Every step of ``VecEpisodicMemory(venv)`` under ``actions``, with copies of the memories after it."""
    wrapped = VecEpisodicMemory(venv, dkm, attractor_steps=3)
    wrapped.seed(SEED)
    online = wrapped.core.backend.online
    try:
        trace = [{"obs": wrapped.reset(), "R": online.R.clone(), "U": online.U.clone()}]
        for a in actions:
            obs, rewards, dones, infos = wrapped.step(a)
            trace.append(
                {"obs": obs, "rewards": rewards, "dones": dones, "infos": infos, "R": online.R.clone(), "U": online.U.clone()}
            )
    finally:
        wrapped.close()
    return trace


def assert_same_obs(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], where: str) -> None:
    assert set(actual) == set(expected) == {"observation", "retrieval", "novelty", "memory"}, where
    for key in expected:
        assert np.asarray(actual[key]).dtype == np.asarray(expected[key]).dtype, f"{where}: {key}"
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{where}: {key}")


def test_subproc_equals_dummy_across_episode_ends(dkm):
    env_fns = [partial(make_frame_env, "MiniGrid-MemoryS7-v0", frame_size=FRAME, max_steps=n) for n in MAX_STEPS]
    actions = np.random.default_rng(0).integers(0, 3, size=(STEPS, len(MAX_STEPS)))
    dummy = run(DummyVecEnv(env_fns), dkm, actions)
    subproc = run(SubprocVecEnv(env_fns, start_method="spawn"), dkm, actions)

    prior_mean = dkm.memory.prior_mean.detach().numpy()
    ends = np.zeros(len(MAX_STEPS), dtype=int)
    for t, (s, d) in enumerate(zip(subproc, dummy, strict=True)):
        where = f"step {t}"
        assert_same_obs(s["obs"], d["obs"], where)
        torch.testing.assert_close(s["R"], d["R"], rtol=0, atol=0, msg=f"{where}: R")
        torch.testing.assert_close(s["U"], d["U"], rtol=0, atol=0, msg=f"{where}: U")
        if t == 0:
            continue
        # SB3's DummyVecEnv keeps rewards in a float32 buffer, SubprocVecEnv stacks the workers' Python floats (float64).
        np.testing.assert_array_equal(s["rewards"].astype(np.float32), d["rewards"], err_msg=where)
        np.testing.assert_array_equal(s["dones"], d["dones"], err_msg=where)
        for i, (info_s, info_d) in enumerate(zip(s["infos"], d["infos"], strict=True)):
            assert set(info_s) == set(info_d), f"{where}, env {i}"
            for key in set(info_d) - {"terminal_observation", "episodic_memory"}:
                assert info_s[key] == info_d[key], f"{where}, env {i}: {key}"
            memory_s, memory_d = info_s["episodic_memory"], info_d["episodic_memory"]  # rewards: float64 vs float32, as above
            assert {k: np.float32(v) for k, v in memory_s.items()} == {k: np.float32(v) for k, v in memory_d.items()}, where
        for i in np.flatnonzero(d["dones"]):
            ends[i] += 1
            # The finished episode's last frame, read from its memory before the reset (no write).
            assert_same_obs(s["infos"][i]["terminal_observation"], d["infos"][i]["terminal_observation"], f"{where}, env {i}")
            np.testing.assert_array_equal(s["infos"][i]["terminal_observation"]["memory"], dummy[t - 1]["R"][i].numpy())
            # The new episode starts from the prior: its first read-outs see the prior mean.
            np.testing.assert_array_equal(s["obs"]["memory"][i], prior_mean)
    assert (ends >= 2).all(), f"every sub-environment should end at least two episodes, ended {ends.tolist()}"
    # The observations were not all the same frame: the comparison had something to compare.
    frames = np.stack([step["obs"]["observation"] for step in dummy])
    assert len(np.unique(frames.reshape(-1, FRAME * FRAME * 3), axis=0)) > 2
