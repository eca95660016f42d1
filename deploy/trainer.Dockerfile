# The trainer image: the project installed with its pins; runs `mlflow run mlflow -e train`
# (one shot, deploy/compose.yaml) and doubles as the MLflow tracking server (mlflow and the
# PostgreSQL driver are among the pins).
#   docker build -f deploy/trainer.Dockerfile -t revival-trainer:latest .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    BENTOML_DO_NOT_TRACK=true \
    MPLBACKEND=Agg \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    GIT_PYTHON_REFRESH=quiet

# libgomp: LightGBM's OpenMP runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY features ./features
COPY training ./training
COPY service ./service
COPY mlflow ./mlflow
RUN pip install .

RUN useradd --create-home --uid 1034 revival && mkdir /mlartifacts && chown revival /mlartifacts /app
USER revival
CMD ["mlflow", "run", "mlflow", "--entry-point=train", "--env-manager=local"]
