"""Allow ``python -m gputuned``."""

from gputuned.daemon.commands.cli import main

raise SystemExit(main())
