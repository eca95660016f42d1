"""``python -m service.report``: the campaign-report CLI (:mod:`service.report.cli`)."""

import sys

from core.env import configure_environment
from service.report.cli import main

if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
