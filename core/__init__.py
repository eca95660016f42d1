"""What features, training and the service all need, below all three.

``env`` (project paths, the MLflow tracking-URI rule, process environment set-up called by
entry points), ``store`` (the contact-history store: the service writes it, retraining reads
it) and ``attribution`` (which purchases a decision earned, used by reports and retraining).
"""
