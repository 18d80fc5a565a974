"""Agents that act in the ``envs`` tasks: scripted experts, trained BC agents, rollouts, demos.

The names most scripts need are importable from here::

    from agents import IBCAgent, load_agent, make_vector_env, rollout

``agents.rl`` (the stable-baselines3 PPO baseline) is imported on its own: it pulls in SB3.
"""

from agents.dataset import DatasetError, DemoDataset, DemoWriter
from agents.experts import Expert, make_expert
from agents.learned import BCAgent, ExplicitBCAgent, IBCAgent, load_agent
from agents.lerobot import LeRobotDemoDataset, open_demos
from agents.lerobot_export import export_lerobot
from agents.rollout import Episode, RolloutStats, make_vector_env, rollout

__all__ = [
    "BCAgent",
    "DatasetError",
    "DemoDataset",
    "DemoWriter",
    "Episode",
    "ExplicitBCAgent",
    "Expert",
    "IBCAgent",
    "LeRobotDemoDataset",
    "RolloutStats",
    "export_lerobot",
    "load_agent",
    "make_expert",
    "make_vector_env",
    "open_demos",
    "rollout",
]
