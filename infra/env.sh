# The project's environment, the one definition: sourced by every `make` recipe (through BASH_ENV)
# and by .venv/bin/activate. Keeps all state inside the repo (.state/) and all telemetry off.
IMGCLF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IMGCLF_ROOT
case ":$PATH:" in *":$IMGCLF_ROOT/.venv/bin:"*) ;; *) export PATH="$IMGCLF_ROOT/.venv/bin:$PATH" ;; esac
export IMGCLF_STATE="${IMGCLF_STATE:-$IMGCLF_ROOT/.state}"
export ZENML_CONFIG_PATH="${ZENML_CONFIG_PATH:-$IMGCLF_STATE/zenml}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$IMGCLF_STATE/mlflow/mlflow.db}"
export IMGCLF_CACHE_DIR="${IMGCLF_CACHE_DIR:-$IMGCLF_STATE/cache}"
export BENTOML_HOME="${BENTOML_HOME:-$IMGCLF_STATE/bentoml}"
export ZENML_ANALYTICS_OPT_IN=false
export ZENML_ENABLE_RICH_TRACEBACK=false
export AUTO_OPEN_DASHBOARD=false
export BENTOML_DO_NOT_TRACK=True
export MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false  # artifact downloads print one bar line per file otherwise
export GX_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=true
export HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false
