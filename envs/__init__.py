"""Maze environments, frame collection and frame datasets (MiniGrid). Depends on ``episodic_memory``."""
