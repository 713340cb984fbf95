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


def _check(args: argparse.Namespace) -> int:
    import time

    from gputuned.dashboards.build import all_dashboards
    from gputuned.dashboards.check import PrometheusAPI, check
    from gputuned.dashboards.rules import all_rules

    if not args.since > 0:
        print(f"gputuned: --since {args.since}: must be positive", file=sys.stderr)
        return 2
    end = time.time()
    try:
        problems = check(PrometheusAPI(args.prometheus), all_dashboards(), all_rules(), end - args.since, end,
                         step=max(1.0, args.since / 300), rate_interval=args.rate_interval)
    except (OSError, ValueError) as e:
        print(f"gputuned: --prometheus {args.prometheus}: {e}", file=sys.stderr)
        return 2
    for expr, why in problems:
        print(f"{expr.where}: {why}: {' '.join(expr.expr.split())}")
    print(f"{len(problems)} expressions without data", file=sys.stderr)
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
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
    c = dsub.add_parser("check", help="list panel and rule expressions that return no data from a Prometheus")
    c.add_argument("--prometheus", default=DEFAULT_PROMETHEUS_URL, metavar="URL", help="Prometheus to query")
    c.add_argument("--since", type=float, default=3600.0, metavar="SECONDS", help="time range to check (default 3600)")
    c.add_argument("--rate-interval", default="1m", metavar="DURATION", help="value of $__rate_interval (default 1m)")
    c.set_defaults(func=_check)
