"""gputuned: GPU monitoring and autotuning daemon for training hosts."""

__version__ = "0.1.0"

#: Exit status of every ``gputuned`` command for bad input (config, flags, files), as argparse uses.
EXIT_USAGE = 2
