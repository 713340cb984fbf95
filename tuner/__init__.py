"""The brain: degradation forecasting, the RL environment and agent, baselines, the safety guard."""
