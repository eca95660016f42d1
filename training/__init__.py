"""Training: backtest, refit, register and gate the models the decision service serves.

``python -m training`` runs :mod:`training.pipeline`. Modules: :mod:`.propensity` (churn and
next-purchase LightGBM models), :mod:`.bgnbd` (BG/NBD baseline and prior), :mod:`.crosssell`
(recommenders), :mod:`.uplift` (offer uplift on the Hillstrom campaign), :mod:`.offer_learning`
(uplift from the service's own decisions), :mod:`.registry` (MLflow pyfuncs and the champion
gate), :mod:`.metrics` / :mod:`.plots` (evaluation), :mod:`.stages` (stage log: wall time and
peak RSS), :mod:`.score` / :mod:`.evaluate` / :mod:`.retrain` (CLIs). Importing this package
imports nothing heavy: import the module you need.
"""
