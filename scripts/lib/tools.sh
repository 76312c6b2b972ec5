# Sourced by the scripts: the pinned Python tools, in three sets each a venv of its own and each only
# as large as its scripts need, installed on first use and whenever a requirements file changes:
#   aws     boto3: verify-deployment, destroy, test-api-usage         (scripts/requirements-aws.txt)
#   deploy  and cargo-lambda: deploy, build-lambdas                   (scripts/requirements-deploy.txt)
#   test    and moto, cfn-lint, the notebooks' tools, lychee: test     (scripts/requirements-test.txt)
# An up-to-date venv of a larger set serves a smaller one.
#
#   METER_VENV        the test venv (default ~/.cache/meter-venv); the others beside it
#   CARGO_TARGET_DIR  the build cache of the scripts that build (default ~/.cache/meter-target; the
#                     Lambda zips go to its lambda/); the scripts that only talk to AWS leave it alone

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${METER_VENV:-$HOME/.cache/meter-venv}
build_cache=${CARGO_TARGET_DIR:-$HOME/.cache/meter-target}
lambda_dir="$build_cache/lambda"

# For the scripts that build: cargo's target directory outside the clone, reused from run to run.
use_build_cache() { export CARGO_TARGET_DIR=$build_cache; }

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

# The venv of a tool set (see the top of this file).
venv_of() { if [[ $1 == test ]]; then echo "$venv"; else echo "$venv-$1"; fi; }

# `ensure_tools aws|deploy|test`: puts a venv holding the set on PATH, installing it if none is current.
ensure_tools() {
  need python3 "install Python 3.11 or later (the tools run in a venv)"
  local set=$1 want candidate larger=() dir
  # Every requirements file in the stamp: a change to any reinstalls each set on its next use.
  want=$(cat "$root"/scripts/requirements-{aws,deploy,test}.txt "$root/notebooks/requirements.txt" | sha256sum | cut -d' ' -f1)
  case $set in
    aws) larger=(test deploy aws) ;;
    deploy) larger=(test deploy) ;;
    test) larger=(test) ;;
    *) die "unknown tool set $set" ;;
  esac
  for candidate in "${larger[@]}"; do
    dir=$(venv_of "$candidate")
    if [[ -x "$dir/bin/python" && "$(cat "$dir/.requirements.sha256" 2>/dev/null)" == "$want" ]]; then
      export PATH="$dir/bin:$PATH"
      return
    fi
  done
  dir=$(venv_of "$set")
  echo "installing the pinned $set tools into $dir" >&2
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/scripts/requirements-$set.txt"
  echo "$want" > "$dir/.requirements.sha256"
  export PATH="$dir/bin:$PATH"
}

# The test tools (scripts/test, the benchmarks that use the emulator).
ensure_venv() { ensure_tools test; }

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

# `build_lambdas PROFILE [DIR]`: the seven Lambda zips, `DIR/<binary>/bootstrap.zip` (default
# `$lambda_dir`), for x86_64 Linux (glibc as on provided.al2023, through cargo-lambda's zig).
build_lambdas() {
  local profile=$1 out=${2:-$lambda_dir} bins=()
  need cargo "install Rust (https://rustup.rs)"
  for bin in authorizer cache-invalidator archive-transformer reconcile-job monthly-report report-links example-backend; do
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
