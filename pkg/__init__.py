"""gputuned: GPU monitoring and autotuning daemon for training hosts."""

__version__ = "0.1.0"
