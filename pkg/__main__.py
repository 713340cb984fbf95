"""Allow ``python -m gputuned``."""

from gputuned.daemon.cli import main

raise SystemExit(main())
