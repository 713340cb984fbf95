"""The metric families the live tuner serves, declared apart from its numpy code.

The daemon's catalog reads them here (with the guard's, in :mod:`gputuned.tuner.decision.guard`),
so a daemon whose tuner is off never imports the decision kernel or numpy.
"""

from __future__ import annotations

from gputuned.collectors.families import declare

EPS = declare("gputuned_tuner_energy_per_sample_joules", "gauge",
              "GPU energy per effective (goodput) sample over the tuner's last interval.")
EPS_REF = declare("gputuned_tuner_reference_energy_per_sample_joules", "gauge",
                  "Energy per effective sample at the job's own settings (the tuner's reference interval).")
GOODPUT_RATIO = declare("gputuned_tuner_goodput_ratio", "gauge", "Goodput over the last interval / the reference interval's.")
LAST_ACTION = declare("gputuned_tuner_last_action_timestamp_seconds", "gauge", "When the tuner last changed a knob.")
DECISIONS = declare("gputuned_tuner_decisions_total", "counter", "Tuner decision intervals run, by chosen move.")
