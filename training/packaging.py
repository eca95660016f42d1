"""What every registered model carries so it loads outside this repository.

A registered pyfunc is a cloudpickle of a wrapper class plus its artifacts; unpickling imports
the wrapper's module. The wrappers and the model classes they rebuild live in the small
:mod:`servable` package, which is logged with each model as ``code_paths`` (MLflow copies it
into the model's ``code/`` folder and puts that folder on ``sys.path`` at load). The logged
requirements pin the exact installed versions of what that code imports, read from the
installed distributions, so ``pip install -r requirements.txt`` rebuilds a working env.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import servable

__all__ = ["BASE_REQUIREMENTS", "code_paths", "pip_requirements"]

#: what every served model needs to load: MLflow's pyfunc, the pickle and the data frames
BASE_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas", "scipy")


def code_paths() -> list[str]:
    """The folders logged with every model: the :mod:`servable` package, nothing else."""
    return [str(Path(servable.__file__).resolve().parent)]


def pip_requirements(*extra: str) -> list[str]:
    """``name==version`` for :data:`BASE_REQUIREMENTS` and ``extra`` distributions, pinned
    to the versions installed here (:class:`importlib.metadata.PackageNotFoundError` names
    a distribution that is not installed)."""
    names = list(dict.fromkeys([*BASE_REQUIREMENTS, *extra]))
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]
