#!/usr/bin/env bash
# Prepare the peers used by bench/: MLflow, BentoML, Evidently and Prefect virtualenvs (never
# installed into modelyard's own environment) and wrk for the serving benchmarks.
# Only some steps: bash bench/setup.sh evidently   (names: mlflow bentoml evidently prefect wrk ray).
# Idempotent: each step is skipped when already done.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"   # pinned: 3.18.0 is listed but its mlflow-skinny 3.18.0 is not served
PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
VENV="$BENCH_DIR/.venv-mlflow"
PY="${PYTHON:-python3}"

log() { printf '[bench/setup] %s\n' "$*" >&2; }
STEPS="${*:-mlflow bentoml evidently prefect wrk}"
want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- MLflow virtualenv -------------------------------------------------------
if ! want mlflow; then
  :
elif [ -x "$VENV/bin/mlflow" ] && "$VENV/bin/python" - "$MLFLOW_VERSION" <<'PY'
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
if ! want bentoml; then
  :
elif [ -x "$BVENV/bin/bentoml" ] && "$BVENV/bin/python" - "$BENTOML_VERSION" "$SKLEARN_VERSION" <<'PY'
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
# bench/serving/many.py serves the same ONNX files from BentoML: onnxruntime, at the version
# modelyard's environment has.
if want bentoml && [ -x "$BVENV/bin/python" ] && ! "$BVENV/bin/python" -c 'import onnxruntime' 2>/dev/null; then
  ORT_VERSION="${ORT_VERSION:-$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || echo 1.32.0)}"
  log "adding onnxruntime==$ORT_VERSION to $BVENV"
  "$BVENV/bin/python" -m pip install --quiet "onnxruntime==$ORT_VERSION"
fi

# --- Ray Serve virtualenv (bench/serving/many.py's density peer; opt-in: 571 MB) ---------
# Only with `bash bench/setup.sh ray`: model multiplexing is Ray Serve's way to serve many
# models from one deployment.
RAY_VERSION="${RAY_VERSION:-2.60.0}"
RVENV="$BENCH_DIR/.venv-ray"
if ! want ray; then
  :
elif [ -x "$RVENV/bin/serve" ] && "$RVENV/bin/python" -c 'import onnxruntime, ray.serve' 2>/dev/null; then
  log "ray already in $RVENV: skipping"
else
  log "creating $RVENV with ray[serve]==$RAY_VERSION"
  [ -x "$RVENV/bin/python" ] || "$PY" -m venv "$RVENV"
  "$RVENV/bin/python" -m pip install --quiet "ray[serve]==$RAY_VERSION" onnxruntime
fi

# --- Evidently virtualenv (monitoring benchmark) ------------------------------
# Its own venv. Evidently 0.7.23 declares pandas>=1.3.5 but does not import with pandas 3
# (pandas.core.dtypes.common.infer_dtype_from_object is gone): pandas<3. pyarrow reads Parquet.
EVIDENTLY_VERSION="${EVIDENTLY_VERSION:-0.7.23}"
EVENV="$BENCH_DIR/.venv-evidently"
if ! want evidently; then
  :
elif [ -x "$EVENV/bin/python" ] && "$EVENV/bin/python" - "$EVIDENTLY_VERSION" <<'PY'
import sys, importlib.metadata as m
ok = m.version("evidently") == sys.argv[1] and int(m.version("pandas").split(".")[0]) < 3
m.version("pyarrow")
from evidently import Report  # noqa: F401  (the 0.7 API the benchmark uses)
from evidently.presets import DataDriftPreset  # noqa: F401
sys.exit(0 if ok else 1)
PY
then
  log "evidently $EVIDENTLY_VERSION already in $EVENV: skipping"
else
  log "creating $EVENV with evidently==$EVIDENTLY_VERSION"
  [ -x "$EVENV/bin/python" ] || "$PY" -m venv "$EVENV"
  "$EVENV/bin/python" -m pip install --quiet --upgrade pip
  "$EVENV/bin/python" -m pip install --quiet "evidently==$EVIDENTLY_VERSION" "pandas<3" pyarrow
  "$EVENV/bin/python" -c 'from evidently import Report; from evidently.presets import DataDriftPreset'
  log "installed: evidently $("$EVENV/bin/python" -c 'import evidently; print(evidently.__version__)')"
fi

# --- Prefect virtualenv (pipelines benchmark) ----------------------------------
# Its own venv. Prefect 3.9.0/3.9.1 require certifi>=2026.10.19, which the package index here
# does not serve (newest 2026.10.18): prefect goes in with --no-deps, then its declared
# requirements (read from its own metadata) with the certifi floor dropped. certifi only
# supplies CA certificates; the benchmark makes no network calls. pip then prints one ERROR
# line about that conflict: expected.
PREFECT_VERSION="${PREFECT_VERSION:-3.9.1}"
PVENV="$BENCH_DIR/.venv-prefect"
if ! want prefect; then
  :
elif [ -x "$PVENV/bin/prefect" ] && "$PVENV/bin/python" - "$PREFECT_VERSION" <<'PY'
import sys, importlib.metadata as m
ok = m.version("prefect") == sys.argv[1]
from prefect import flow, task  # noqa: F401  (the API the benchmark uses, with its deps)
from prefect.server.database import provide_database_interface  # noqa: F401  (the local server)
sys.exit(0 if ok else 1)
PY
then
  log "prefect $PREFECT_VERSION already in $PVENV: skipping"
else
  log "creating $PVENV with prefect==$PREFECT_VERSION"
  [ -x "$PVENV/bin/python" ] || "$PY" -m venv "$PVENV"
  "$PVENV/bin/python" -m pip install --quiet --upgrade pip
  "$PVENV/bin/python" -m pip install --quiet --no-deps "prefect==$PREFECT_VERSION"
  PREQS="$(mktemp)"
  "$PVENV/bin/python" - >"$PREQS" <<'PY'
import importlib.metadata as m, re
for r in m.requires("prefect") or []:
    if "extra ==" in r:
        continue
    if re.match(r"certifi\b", r):
        r = "certifi"
    print(r)
PY
  "$PVENV/bin/python" -m pip install --quiet -r "$PREQS"
  rm -f "$PREQS"
  "$PVENV/bin/python" -c 'from prefect import flow, task'
  log "installed: prefect $("$PVENV/bin/python" -c 'import prefect; print(prefect.__version__)')"
fi

# --- wrk (serving benchmarks) ------------------------------------------------
if ! want wrk; then
  :
elif command -v wrk >/dev/null 2>&1; then
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
