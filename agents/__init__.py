"""Stable-Baselines3 integration: features extractors, policies and callbacks. Depends on ``episodic_memory``."""
