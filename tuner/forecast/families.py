"""The metric families the forecaster serves, declared apart from its numpy code.

The daemon's catalog reads them here, so a daemon that serves no forecasts never imports the
detector, the ETA fits or numpy.
"""

from __future__ import annotations

from gputuned.collectors.families import declare

FORECAST_VALUE = declare("gputuned_forecast_value", "gauge", "Prophet forecast of a series at now + horizon seconds; bound is yhat, lower or upper.")
ANOMALY_SCORE = declare("gputuned_anomaly_score", "gauge", "Online anomaly score of the series' last sample, 0 to 1.")
ALERT_ACTIVE = declare("gputuned_alert_active", "gauge", "1 while the alert holds, by alert kind and series.")
ALERTS_RAISED = declare("gputuned_alerts_raised_total", "counter", "Alerts raised, by alert kind.")
ETA = declare("gputuned_degradation_eta_seconds", "gauge", "Predicted seconds until the series crosses its limit; +Inf when no trend heads there.")
FIT_SECONDS = declare("gputuned_forecast_fit_duration_seconds", "gauge", "CPU seconds of the last refit of all series.")
FITS = declare("gputuned_forecast_fits_total", "counter", "Forecast refits completed by the worker.")
WORKER_UP = declare("gputuned_forecast_worker_up", "gauge", "1 while the forecast worker process is alive.")
