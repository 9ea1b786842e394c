"""Training throughput of the memory trainer's default config: frames per second, DKM beside KM and VAE.

Times full optimisation steps (sample an episode batch from memory, forward, backward, Adam) of
the models that ``episodic-memory pretrain`` builds by default, on uint8 frames of the default
size (32x32x3). Frames are random (throughput does not depend on their content) unless
``--data`` points to a collected dataset.

Usage::

    python benchmarks/train_throughput.py                       # CPU, 1 and 2 threads
    python benchmarks/train_throughput.py --device cuda         # on a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from episodic_memory.train.pretrain import PretrainConfig, build_model, resolve_device


def frames_per_second(model_name: str, config: PretrainConfig, x: torch.Tensor, device: torch.device, steps: int) -> float:
    torch.manual_seed(config.seed)
    model = build_model(PretrainConfig(**{**config.__dict__, "model": model_name}), tuple(x.shape[2:])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = x.to(device)

    def step() -> None:
        loss = model.loss(x)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] * x.shape[1] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to time")
    parser.add_argument("--models", nargs="+", default=["dkm", "km", "vae"])
    parser.add_argument("--steps", type=int, default=5, help="timed optimisation steps per cell")
    parser.add_argument("--data", default=None, help="optional dataset directory to draw frames from")
    parser.add_argument("--hidden-channels", type=int, default=None, help="override the default filters (to compare)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = PretrainConfig(seed=args.seed, hidden_channels=args.hidden_channels or PretrainConfig.hidden_channels)
    device = resolve_device(args.device)
    rng = np.random.default_rng(args.seed)
    B, T = config.batch_size, config.episode_length
    if args.data:
        from episodic_memory.envs.dataset import FrameDataset

        x = FrameDataset(args.data, split="train").sample(B, T, config.mode, rng)
    else:
        x = torch.from_numpy(rng.integers(0, 256, size=(B, T, 32, 32, 3), dtype=np.uint8))
    print(
        f"default pretrain config: frames {tuple(x.shape[2:])}, B={B}, T={T}, code {config.code_size}, "
        f"K={config.num_slots}, {config.hidden_channels} filters, {config.likelihood} likelihood; torch {torch.__version__}"
    )
    threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    header = f"{'device':>6} {'threads':>7} " + " ".join(f"{m + ' fps':>10}" for m in args.models) + "   dkm/vae"
    print(header)
    print("-" * len(header))
    for n in threads:
        torch.set_num_threads(n)
        fps = {m: frames_per_second(m, config, x, device, args.steps) for m in args.models}
        ratio = f"{fps['dkm'] / fps['vae']:>9.2f}" if {"dkm", "vae"} <= set(fps) else ""
        print(f"{device.type:>6} {n:>7} " + " ".join(f"{fps[m]:>10.0f}" for m in args.models) + f" {ratio}")


if __name__ == "__main__":
    main()
