"""The Hillstrom campaign's design: arms, control, outcomes, features, propensity, gate metric."""

from __future__ import annotations

__all__ = [
    "ARMS",
    "CONTROL",
    "GATE_ARM",
    "GATE_METRIC",
    "GATE_OUTCOME",
    "HILLSTROM_FEATURES",
    "HILLSTROM_PROPENSITY",
    "METRICS",
    "MODELS",
    "MODEL_NAME",
    "OUTCOMES",
]

MODEL_NAME = "offer_uplift"
HILLSTROM_FEATURES = ["recency", "history", "mens", "womens", "newbie", "zip_code", "channel"]
ARMS = ("mens_email", "womens_email")
CONTROL = "control"
OUTCOMES = ("visit", "conversion", "spend")
MODELS = ("x_learner", "two_model", "response", "random")
METRICS = ("qini", "auuc", "uplift_at_30")
# three equal randomised arms: an e-mail arm is half of (that arm + control)
HILLSTROM_PROPENSITY = 0.5
GATE_ARM, GATE_OUTCOME = "mens_email", "visit"
GATE_METRIC = f"qini.{GATE_ARM}.{GATE_OUTCOME}"
