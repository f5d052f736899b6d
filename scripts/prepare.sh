# Sourced (bash) by the entry scripts run.sh, sim_experiment.sh and test.sh: set up
# (scripts/bootstrap.sh: every stage skipped when its inputs have not changed), enter the project's
# environment (scripts/env.sh) and work from the repository root, which it leaves in ROOT.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"
