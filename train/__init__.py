"""Trainers and command-line entry points; wandb logging lives here."""
