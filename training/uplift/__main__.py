"""``python -m training.uplift``: the Hillstrom offer-uplift experiment and registration."""

from core.env import configure_environment
from training.uplift.cli import main

if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
