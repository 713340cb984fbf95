"""Forecasts: where key series are heading, how anomalous they look, and what is alerting."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.board import dashboard, variable
from gputuned.dashboards.panels import fraction, stat, state_stat, state_timeline, timeseries
from gputuned.dashboards.queries import NODE, RANGE, Query
from gputuned.dashboards.thresholds import high_bad, info_only, low_bad

UID = "gputuned-forecasts"
SERIES = f'{NODE}, series=~"$series"'
#: Predicted times are +Inf when no trend heads to the limit; capped at one day for display.
ETA_CAP_S = 86400
#: Labels that tell apart the series of one family: GPU, or training job and rank.
_WHICH = "{{gpu}}{{exported_job}}{{rank}}"


def forecast_panels() -> list[g.Panel]:
    """The series and its forecast band at the chosen horizon."""
    band = f'{SERIES}, horizon=~"$horizon"'

    def bound(name: str) -> str:
        return f'gputuned_forecast_value{{{band}, bound="{name}"}}'

    return [
        timeseries("Series and forecast band", "short", [
            Query(f'{{__name__=~"$series", {NODE}}}', f"{{{{__name__}}}} {_WHICH} actual"),
            *(Query(bound(b), f"{{{{series}}}} {_WHICH} {shown}") for b, shown in (("yhat", "forecast"), ("lower", "lower"), ("upper", "upper"))),
        ], info_only(), "The selected series now, and Prophet's forecast with its interval for now + horizon seconds.", width=24),
        timeseries("Forecast band width", "percentunit", [Query(
            f"({bound('upper')} - ignoring (bound) {bound('lower')}) / ignoring (bound) clamp_min(abs({bound('yhat')}), 1e-9)",
            f"{{{{series}}}} {_WHICH} +{{{{horizon}}}}s",
        )], high_bad(0.2, 0.5), "Interval width over the forecast value: how unsure the forecast is.", min_value=0),
    ]


def anomaly_panels() -> list[g.Panel]:
    """Anomaly scores, active alerts and alert counts."""
    return [
        fraction("Anomaly score", [Query(f"gputuned_anomaly_score{{{SERIES}}}", f"{{{{series}}}} {_WHICH}")], high_bad(0.5, 0.8),
                 "Online anomaly score of each series' newest sample, 0 (normal) to 1."),
        state_timeline("Active alerts",
                       [Query(f"max by (alert, series, gpu) (gputuned_alert_active{{{NODE}}})", "{{alert}} {{series}} {{gpu}}")],
                       "One band per alert: anomaly or degradation per series, thermal/ECC/XID per GPU.",
                       ("clear", "green"), ("ALERT", "red"), width=16),
        stat("Alerts raised in range", "short",
             [Query(f"sum by (alert) (increase(gputuned_alerts_raised_total{{{NODE}}}[{RANGE}]))", "{{alert}}")],
             high_bad(1, 5), "Alerts raised over the dashboard's time range, by kind (each event raises once)."),
    ]


def degradation_panels() -> list[g.Panel]:
    """Predicted time to degradation and the forecast worker's health."""
    return [
        timeseries("Predicted time to degradation", "s",
                   [Query(f"clamp_max(gputuned_degradation_eta_seconds{{{SERIES}}}, {ETA_CAP_S})", f"{{{{series}}}} {_WHICH}")],
                   low_bad(1800, 7200), "Seconds until the series is predicted to cross its limit (capped at one day: no trend).",
                   min_value=0),
        state_stat("Forecast worker up", [Query(f"gputuned_forecast_worker_up{{{NODE}}}", "{{instance}}")],
                   "1 while the Prophet worker process is alive.", ("DOWN", "red"), ("up", "green")),
        timeseries("Forecast refit duration", "s", [Query(f"gputuned_forecast_fit_duration_seconds{{{NODE}}}", "{{instance}}")],
                   high_bad(60, 300), "CPU seconds the last refit of all series took.", min_value=0),
    ]


def build() -> g.Dashboard:
    """The forecasts dashboard."""
    return dashboard(
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
        variables=[
            # no allValue: "All" must expand to the listed names, since the panel selects by __name__
            variable("series", "Series", 'label_values(gputuned_anomaly_score{instance=~"$instance"}, series)', allValue=None),
            variable("horizon", "Horizon (s)", 'label_values(gputuned_forecast_value{instance=~"$instance"}, horizon)',
                     includeAll=False, multi=False, allValue=None, default="300", sort=3),
        ],
    )
