"""Training: backtest, refit, register and gate the models the decision service serves.

``python -m training`` runs :mod:`training.pipeline`. The model classes and pyfunc wrappers
that registered models run live in :mod:`servable` (shipped with every model). Modules here:
:mod:`.crosssell` (recommender tuning, backtest, the served refit), :mod:`.uplift` (offer
uplift on the Hillstrom campaign), :mod:`.offer_learning` (uplift from the service's own
decisions), :mod:`.registry` (MLflow logging and the champion gate), :mod:`.packaging` (what
every logged model carries), :mod:`.metrics` / :mod:`.plots` (evaluation), :mod:`.stages`
(stage log: wall time and peak RSS), :mod:`.score` / :mod:`.evaluate` / :mod:`.retrain` (CLIs). Importing this package
imports nothing heavy: import the module you need.
"""
