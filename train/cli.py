"""The ``episodic-memory`` command: collect frames, pretrain a memory, evaluate it, train and evaluate agents.

    episodic-memory collect  --out data/mazes
    episodic-memory digits   --out data/digits      # binarized 8x8 digits (scikit-learn's), episodes like the mazes'
    episodic-memory pretrain --data data/mazes --out runs/dkm
    episodic-memory evaluate --data data/mazes --model dkm=runs/dkm/model.safetensors --out runs/eval
    episodic-memory train-agent --memory dkm --memory-checkpoint runs/dkm/model.safetensors --out runs/agent
    episodic-memory evaluate-agent --agent runs/agent/agent.zip
    episodic-memory demo     # all of the above on a small budget (about 10 minutes on 2 CPU cores)
    episodic-memory train-agent --env-id CartPole-v1 --out runs/cartpole        # any Gymnasium id
    episodic-memory train-agent --env-id popgym-RepeatPreviousEasy-v0 --import popgym --out runs/repeat

Every subcommand takes ``--config FILE.yaml`` (values for its options; flags override it) and
``--seed``; ``--help`` lists the options with their defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from episodic_memory import load_machine
from episodic_memory.envs.collect import CollectConfig, collect
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.envs.digits import DigitsConfig, write_digits
from episodic_memory.evaluation.generative import EvaluationConfig, check_enough_layouts, evaluate_models
from episodic_memory.train.config import add_config_arguments, config_from_args
from episodic_memory.train.demo import DemoConfig, run_demo
from episodic_memory.train.pretrain import PretrainConfig, pretrain, resolve_device
from episodic_memory.train.train_agent import EvaluateAgentConfig, TrainAgentConfig, evaluate_agent, train_agent

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="episodic-memory",
        description=__doc__.replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "collect",
        help="record egocentric frames from MiniGrid mazes (or any env's observations) into a dataset directory",
        description="Run a behaviour policy (a random walk with a forward bias by default) in maze environments "
        "and write the frames as compressed shards plus a JSON manifest; other Gymnasium ids (--envs ID) take random "
        "actions and record their own observations, encoded as the memory reads them. "
        "Re-running adds shards; it never corrupts existing ones.",
    )
    add_config_arguments(p, CollectConfig)

    p = commands.add_parser(
        "digits",
        help="write scikit-learn's 8x8 digits, binarized, as a dataset directory (no download)",
        description="Binarize load_digits (a pixel is on above 8 of 16) and write it in the format of collected frames, "
        "grouped by digit into layouts of --group-size images, so that pretrain and evaluate read it as they read mazes.",
    )
    add_config_arguments(p, DigitsConfig)

    p = commands.add_parser(
        "pretrain",
        help="train a DKM, KM or VAE on episodes of collected frames",
        description="Train a generative memory on episodes of collected frames, with checkpoints, "
        "exact resumption, wandb logging, and an evaluation on held-out mazes at the end. Runs under torchrun for DDP.",
    )
    add_config_arguments(p, PretrainConfig)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue the run in --out from its newest checkpoint, or from the checkpoint directory given",
    )

    p = commands.add_parser(
        "evaluate",
        help="conditional NLL, capacity curve and denoising of saved models on held-out mazes",
        description="Evaluate saved models on the held-out mazes of a dataset; writes report.json and PNG figures to --out.",
    )
    p.add_argument("--data", required=True, help="dataset directory written by `episodic-memory collect`")
    p.add_argument(
        "--model", action="append", required=True, metavar="NAME=PATH", help="a model to evaluate (repeat for several)"
    )
    p.add_argument("--out", default="runs/eval", help="directory for report.json and the figures")
    p.add_argument("--test-fraction", type=float, default=0.1, help="fraction of mazes held out (as in pretrain)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto picks CUDA when available")
    add_config_arguments(p, EvaluationConfig)

    p = commands.add_parser(
        "train-agent",
        help="train PPO / A2C / RecurrentPPO / DQN / QR-DQN on any Gymnasium env, with or without the episodic memory",
        description="Train an SB3 agent on any Gymnasium env (MiniGrid ids: egocentric frames; others: their own "
        "observations), with the memory read-outs (--memory dkm|km; a fresh memory fits the space) or without "
        "(--memory none); checkpoints, wandb logging (SB3 and memory metrics) and an evaluation at the end. "
        "dqn and qrdqn print their replay buffer's size before allocating it (see --replay-readouts). "
        "SIGINT/SIGTERM writes a checkpoint and exits with 130; --resume continues from it.",
    )
    add_config_arguments(p, TrainAgentConfig)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint (model, step count, schedules, replay buffer, logs, "
        "wandb run); the environments start new episodes",
    )

    p = commands.add_parser(
        "evaluate-agent",
        help="success rate and mean return of a trained agent",
        description="Run a trained agent for N episodes with the memory machine it was trained with, and write evaluation.json "
        "(evaluation-sampled.json with --stochastic true) to --out, by default next to the agent.",
    )
    add_config_arguments(p, EvaluateAgentConfig)

    p = commands.add_parser(
        "demo",
        help="the whole path on a small budget: collect, pretrain, evaluate, train PPO with and without memory, results",
        description="Collect maze frames, pretrain a DKM, evaluate it (figures), train PPO with the memory wrapper and a "
        "memory-less PPO on a MiniGrid memory task, evaluate both; prints a results table, the stage timings, every "
        "artefact and the `wandb sync` commands. Finished stages are reused when run again with the same settings.",
    )
    add_config_arguments(p, DemoConfig)
    return parser


def _evaluate(args: argparse.Namespace) -> dict:
    config = config_from_args(EvaluationConfig, args)
    device = resolve_device(args.device)
    paths = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model must look like NAME=PATH (e.g. dkm=runs/dkm/model.safetensors), got {item!r}")
        if name in paths:
            raise ValueError(f"--model {name}: the name is given twice; give each model its own NAME")
        paths[name] = path
    models = {}
    for name, path in paths.items():
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"--model {name}={path}: no such file; `episodic-memory pretrain --out DIR` writes DIR/model.safetensors"
            )
        try:
            models[name] = load_machine(path, map_location=device)
        except ValueError as error:
            raise ValueError(
                f"--model {name}={path}: {error}; pass a model.safetensors written by `episodic-memory pretrain`"
            ) from error
    test = FrameDataset(args.data, split="test", test_fraction=args.test_fraction)
    for name, model in models.items():
        if tuple(model.input_shape) != tuple(test.frame_shape):
            raise ValueError(
                f"model {name!r} expects frames of shape {tuple(model.input_shape)}, {args.data!r} holds {test.frame_shape}: "
                f"evaluate it on frames collected with --frame-size {model.input_shape[0]}"
            )
        check_enough_layouts(
            config,
            model,
            test.num_layouts,
            f"the test split of {args.data!r}",
            "collect more layouts into the dataset, raise --test-fraction, or pass --mode / --capacity-modes with fewer layouts",
        )
    return evaluate_models(models, test.sample, Path(args.out), config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "collect":
            torch.set_num_threads(1)  # one small resize per frame: more threads only add contention (8x slower on a busy CPU)
            manifest = collect(config_from_args(CollectConfig, args))
            print(f"dataset manifest: {manifest}")
            return 0
        if args.command == "digits":
            print(f"dataset manifest: {write_digits(config_from_args(DigitsConfig, args))}")
            return 0
        if args.command == "pretrain":
            summary = pretrain(config_from_args(PretrainConfig, args), resume=args.resume)
            print(json.dumps({k: v for k, v in summary.items() if k != "evaluation"}, indent=2))
            return EXIT_INTERRUPTED if summary["interrupted"] else 0
        if args.command == "train-agent":
            summary = train_agent(config_from_args(TrainAgentConfig, args), resume=args.resume)
            print(json.dumps(summary, indent=2))
            return EXIT_INTERRUPTED if summary["interrupted"] else 0
        if args.command == "demo":
            return run_demo(config_from_args(DemoConfig, args))
        if args.command == "evaluate-agent":
            options = config_from_args(EvaluateAgentConfig, args)
            report = evaluate_agent(
                options.agent, options.episodes, options.seed, deterministic=not options.stochastic, out=options.out
            )
            print(json.dumps(report, indent=2))
            return 0
        report = _evaluate(args)
        nll = {name: entry["conditional_nll"] for name, entry in report["models"].items() if "conditional_nll" in entry}
        print(json.dumps(nll, indent=2))
        print(f"report and figures in {args.out}")
        return 0
    except (ValueError, OSError) as error:  # user errors (bad options, missing or damaged files): a message, no traceback
        print(f"episodic-memory {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
