#!/usr/bin/env bash
# Prepare the peers used by bench/: an MLflow and a BentoML virtualenv (never installed
# into modelyard's own environment) and wrk for the serving benchmarks.
# Idempotent: each step is skipped when already done.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"   # pinned: 3.18.0 is listed but its mlflow-skinny 3.18.0 is not served
PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
VENV="$BENCH_DIR/.venv-mlflow"
PY="${PYTHON:-python3}"

log() { printf '[bench/setup] %s\n' "$*" >&2; }

# --- MLflow virtualenv -------------------------------------------------------
if [ -x "$VENV/bin/mlflow" ] && "$VENV/bin/python" - "$MLFLOW_VERSION" <<'PY'
import sys, importlib.metadata as m
ok = m.version("mlflow") == sys.argv[1]
m.version("psycopg2-binary")
sys.exit(0 if ok else 1)
PY
then
  log "mlflow $MLFLOW_VERSION already in $VENV: skipping"
else
  log "creating $VENV with mlflow==$MLFLOW_VERSION"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet \
      "mlflow==$MLFLOW_VERSION" "psycopg2-binary==$PSYCOPG2_VERSION"
  log "installed: $("$VENV/bin/mlflow" --version)"
fi

# --- BentoML virtualenv (serving benchmark) ------------------------------------
# Its own venv: MLflow 3.17 and BentoML do not resolve together (see shared/PEERS.md).
# scikit-learn is pinned to the version of the environment that saves the models.
BENTOML_VERSION="${BENTOML_VERSION:-1.4.39}"
BVENV="$BENCH_DIR/.venv-bentoml"
SKLEARN_VERSION="${SKLEARN_VERSION:-$("$PY" -c 'import sklearn; print(sklearn.__version__)' 2>/dev/null || echo 1.9.1)}"
if [ -x "$BVENV/bin/bentoml" ] && "$BVENV/bin/python" - "$BENTOML_VERSION" "$SKLEARN_VERSION" <<'PY'
import sys, importlib.metadata as m
ok = m.version("bentoml") == sys.argv[1] and m.version("scikit-learn") == sys.argv[2]
m.version("pandas"); m.version("joblib")
sys.exit(0 if ok else 1)
PY
then
  log "bentoml $BENTOML_VERSION already in $BVENV: skipping"
else
  log "creating $BVENV with bentoml==$BENTOML_VERSION scikit-learn==$SKLEARN_VERSION"
  [ -x "$BVENV/bin/python" ] || "$PY" -m venv "$BVENV"
  "$BVENV/bin/python" -m pip install --quiet --upgrade pip
  "$BVENV/bin/python" -m pip install --quiet \
      "bentoml==$BENTOML_VERSION" "scikit-learn==$SKLEARN_VERSION" pandas joblib
  log "installed: $("$BVENV/bin/bentoml" --version)"
fi

# --- wrk (serving benchmarks) ------------------------------------------------
if command -v wrk >/dev/null 2>&1; then
  log "wrk already installed: skipping"
else
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y wrk >/dev/null; then
    log "apt-get install wrk failed: running apt-get update and retrying"
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y wrk >/dev/null
  fi
  log "installed: $(command -v wrk)"
fi
log "done"
