"""Forecasts: where key series are heading, how anomalous they look, and what is alerting."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.panels import (
    DATASOURCE,
    NODE,
    RANGE,
    Query,
    dashboard,
    high_bad,
    info_only,
    low_bad,
    stat,
    steps,
    timeline,
    timeseries,
    value_text,
)

UID = "gputuned-forecasts"
SERIES = f'{NODE}, series=~"$series"'
#: Predicted times are +Inf when no trend heads to the limit; capped at one day for display.
ETA_CAP_S = 86400


def forecast_panels() -> list[g.Panel]:
    """The series and its forecast band at the chosen horizon."""
    band = f'{SERIES}, horizon=~"$horizon"'
    return [
        timeseries(
            "Series and forecast band", "short",
            [
                Query(f'{{__name__=~"$series", {NODE}}}', "{{__name__}} {{gpu}}{{exported_job}}{{rank}} actual"),
                Query(f'gputuned_forecast_value{{{band}, bound="yhat"}}', "{{series}} {{gpu}}{{exported_job}}{{rank}} forecast"),
                Query(f'gputuned_forecast_value{{{band}, bound="lower"}}', "{{series}} {{gpu}}{{exported_job}}{{rank}} lower"),
                Query(f'gputuned_forecast_value{{{band}, bound="upper"}}', "{{series}} {{gpu}}{{exported_job}}{{rank}} upper"),
            ],
            info_only(),
            "The selected series now, and Prophet's forecast with its interval for now + horizon seconds.",
            width=24,
        ),
        timeseries(
            "Forecast band width", "percentunit",
            [Query(
                f'(gputuned_forecast_value{{{band}, bound="upper"}} - ignoring (bound) gputuned_forecast_value{{{band}, bound="lower"}})'
                f' / ignoring (bound) clamp_min(abs(gputuned_forecast_value{{{band}, bound="yhat"}}), 1e-9)',
                "{{series}} {{gpu}}{{exported_job}}{{rank}} +{{horizon}}s",
            )],
            high_bad(0.2, 0.5), "Interval width over the forecast value: how unsure the forecast is.", min_value=0,
        ),
    ]


def anomaly_panels() -> list[g.Panel]:
    """Anomaly scores, active alerts and alert counts."""
    return [
        timeseries(
            "Anomaly score", "percentunit",
            [Query(f"gputuned_anomaly_score{{{SERIES}}}", "{{series}} {{gpu}}{{exported_job}}{{rank}}")],
            high_bad(0.5, 0.8), "Online anomaly score of each series' newest sample, 0 (normal) to 1.",
            min_value=0, max_value=1,
        ),
        timeline(
            "Active alerts", [
                Query(f"max by (alert, series, gpu) (gputuned_alert_active{{{NODE}}})", "{{alert}} {{series}} {{gpu}}"),
            ],
            steps("green", ("red", 1)), "One band per alert: anomaly or degradation per series, thermal/ECC/XID per GPU.",
            mappings=value_text({0: ("clear", "green"), 1: ("ALERT", "red")}), width=16,
        ),
        stat(
            "Alerts raised in range", "short",
            [Query(f"sum by (alert) (increase(gputuned_alerts_raised_total{{{NODE}}}[{RANGE}]))", "{{alert}}")],
            high_bad(1, 5), "Alerts raised over the dashboard's time range, by kind (each event raises once).",
        ),
    ]


def degradation_panels() -> list[g.Panel]:
    """Predicted time to degradation and the forecast worker's health."""
    return [
        timeseries(
            "Predicted time to degradation", "s",
            [Query(f"clamp_max(gputuned_degradation_eta_seconds{{{SERIES}}}, {ETA_CAP_S})", "{{series}} {{gpu}}{{exported_job}}{{rank}}")],
            low_bad(1800, 7200), "Seconds until the series is predicted to cross its limit (capped at one day: no trend).",
            min_value=0,
        ),
        stat(
            "Forecast worker up", "none",
            [Query(f"gputuned_forecast_worker_up{{{NODE}}}", "{{instance}}")],
            steps("red", ("green", 1)), "1 while the Prophet worker process is alive.",
            mappings=value_text({0: ("DOWN", "red"), 1: ("up", "green")}),
        ),
        timeseries(
            "Forecast refit duration", "s",
            [Query(f"gputuned_forecast_fit_duration_seconds{{{NODE}}}", "{{instance}}")],
            high_bad(60, 300), "CPU seconds the last refit of all series took.", min_value=0,
        ),
    ]


def build() -> g.Dashboard:
    """The forecasts dashboard."""
    d = dashboard(
        "gputuned / Forecasts",
        UID,
        "Series with their Prophet forecast bands, online anomaly scores, alerts, and predicted time to degradation.",
        [
            ("Forecasts", forecast_panels()),
            ("Anomalies and alerts", anomaly_panels()),
            ("Degradation ahead", degradation_panels()),
        ],
        gpu=False,
        tags=["forecast"],
    )
    d.templating.list += [
        g.Template(
            name="series", label="Series", query='label_values(gputuned_anomaly_score{instance=~"$instance"}, series)',
            # no allValue: "All" must expand to the listed names, since the panel selects by __name__
            dataSource=DATASOURCE, includeAll=True, multi=True, default="$__all", refresh=2,
        ),
        g.Template(
            name="horizon", label="Horizon (s)", query='label_values(gputuned_forecast_value{instance=~"$instance"}, horizon)',
            dataSource=DATASOURCE, includeAll=False, multi=False, default="300", refresh=2, sort=3,
        ),
    ]
    return d
