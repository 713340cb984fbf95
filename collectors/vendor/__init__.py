"""Third-party code carried unchanged or generated from third-party sources (not edited here)."""
