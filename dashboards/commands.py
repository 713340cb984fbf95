"""``gputuned dashboards build``: write the Grafana dashboards and provisioning files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gputuned.dashboards import DEFAULT_DASHBOARDS_PATH, DEFAULT_PROMETHEUS_URL


def _build(args: argparse.Namespace) -> int:
    from gputuned.dashboards.build import GENERATED, build

    out = Path(args.output) if args.output else GENERATED
    if out.exists() and not out.is_dir():
        print(f"gputuned: --output {out}: not a directory", file=sys.stderr)
        return 2
    try:
        paths = build(out, dashboards_path=args.dashboards_path, prometheus_url=args.prometheus_url)
    except OSError as e:
        print(f"gputuned: --output {out}: {e.strerror}", file=sys.stderr)
        return 2
    if args.docs:
        from gputuned.dashboards.build import all_dashboards
        from gputuned.dashboards.docs import render_markdown
        from gputuned.dashboards.rules import all_rules

        try:
            Path(args.docs).write_text(render_markdown(all_dashboards(), all_rules()))
        except (OSError, ValueError) as e:
            print(f"gputuned: --docs {args.docs}: {e}", file=sys.stderr)
            return 2
        paths.append(Path(args.docs))
    for p in paths:
        print(p)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dashboards", help="Grafana dashboards and provisioning files")
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    b = dsub.add_parser("build", help="write the dashboards' JSON and Grafana provisioning files")
    b.add_argument("-o", "--output", metavar="DIR", help="output directory (default: the package's generated/)")
    b.add_argument(
        "--dashboards-path", default=DEFAULT_DASHBOARDS_PATH, metavar="PATH",
        help=f"where Grafana will find the JSON files, written into the provider file (default {DEFAULT_DASHBOARDS_PATH})",
    )
    b.add_argument(
        "--prometheus-url", default=DEFAULT_PROMETHEUS_URL, metavar="URL",
        help=f"Prometheus URL for the data source file (default {DEFAULT_PROMETHEUS_URL})",
    )
    b.add_argument("--docs", metavar="FILE", help="also write the panel listing (docs/dashboards.md)")
    b.set_defaults(func=_build)
