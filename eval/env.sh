# What every eval shell script starts with (`source "$(dirname "$0")/env.sh"`): strict mode, the checkout's
# root as the working folder, the shared data and weights beside it, and the latok to run.
#   SHARED   the data folder (default ../shared/data)       LATOK  the latok command (default .venv/bin/latok)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared/data}
export LATOK_WEIGHTS_DIR=${LATOK_WEIGHTS_DIR:-../shared/weights}
LATOK=${LATOK:-.venv/bin/latok}
