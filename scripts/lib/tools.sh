# Sourced by the scripts: the Python venv with the pinned tools (boto3 and moto, cfn-lint, cargo-lambda),
# the notebooks' tools (notebooks/requirements.txt), installed on first use and whenever a requirements
# file changes.
#
#   METER_VENV        the venv (default ~/.cache/meter-venv)
#   CARGO_TARGET_DIR  the build cache (default ~/.cache/meter-target); the Lambda zips go to its lambda/

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${METER_VENV:-$HOME/.cache/meter-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/meter-target}
lambda_dir="$CARGO_TARGET_DIR/lambda"

die() { echo "error: $*" >&2; exit 1; }

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# `wait_for_port PORT PID`: returns once something listens on PORT (20 s at most); fails at once if
# process PID has exited.
wait_for_port() {
  local port=$1 pid=$2
  for _ in $(seq 1 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"; }

ensure_venv() {
  need python3 "install Python 3.11 or later (the tools run in a venv)"
  local requirements="$root/scripts/requirements-test.txt" stamp="$venv/.requirements.sha256" want
  want=$(cat "$requirements" "$root/notebooks/requirements.txt" | sha256sum | cut -d' ' -f1)
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "installing the pinned tools into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

ensure_infra_packages() {
  need node "install Node.js 20 or later (the CDK app)"
  need npm "install npm (comes with Node.js)"
  local stamp="$root/infra/node_modules/.package-lock.sha256" want
  want=$(sha256sum "$root/infra/package-lock.json" | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    (cd "$root/infra" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}

# mdbook, which builds the manual (docs/): pinned, built once into ~/.cache/meter-tools (or
# METER_TOOLS) with only what `mdbook build` needs.
MDBOOK_VERSION=0.5.4
ensure_mdbook() {
  local tools=${METER_TOOLS:-$HOME/.cache/meter-tools}
  if [[ "$("$tools/bin/mdbook" --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]]; then
    need cargo "install Rust (https://rustup.rs)"
    echo "installing mdbook $MDBOOK_VERSION into $tools" >&2
    cargo install --quiet --locked "mdbook@$MDBOOK_VERSION" --no-default-features --features search --root "$tools"
  fi
  export PATH="$tools/bin:$PATH"
}

# `build_lambdas PROFILE [DIR]`: the six Lambda zips, `DIR/<binary>/bootstrap.zip` (default
# `$lambda_dir`), for x86_64 Linux (glibc as on provided.al2023, through cargo-lambda's zig).
build_lambdas() {
  local profile=$1 out=${2:-$lambda_dir} bins=()
  need cargo "install Rust (https://rustup.rs)"
  for bin in authorizer cache-invalidator archive-transformer reconcile-job monthly-report example-backend; do
    bins+=(--bin "$bin")
  done
  # --disable-optimizations: cargo-lambda would otherwise force its own release settings, among them
  # panic = "abort", which turns one bad event into a dead sandbox; the workspace profiles decide.
  (cd "$root" && cargo lambda build --locked --disable-optimizations --profile "$profile" --x86-64 \
    --output-format zip --lambda-dir "$out" "${bins[@]}")
}

ensure_environment() {
  local env=$1
  python3 - "$root/infra/environments.json" "$env" <<'PY' || exit 1
import json, sys
names = [n for n in json.load(open(sys.argv[1])) if not n.startswith("$")]
if sys.argv[2] not in names:
    sys.exit(f'error: unknown environment "{sys.argv[2]}": infra/environments.json defines {", ".join(names)}')
PY
}
