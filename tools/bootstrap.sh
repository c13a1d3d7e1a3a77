#!/usr/bin/env bash
# Set-up for a fresh machine. `system`: the servers the demo and tests run (PostgreSQL with
# pg_stat_statements, Prometheus/promtool, VictoriaMetrics) and the headless Chromium the report tests open the
# pages in (driven by Playwright, never `playwright install`) and Node.js with npm (the stock Node
# service in tests/nodesvc); installed with apt on Debian as root when missing, otherwise we say
# exactly what to install. `venv DIR`: the Python virtual environment. `npm DIR`: `npm ci` in DIR
# when its node_modules is older than its package-lock.json.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }

pg_bindir() {
  if have pg_config && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  if have initdb; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

check_system() {
  need_pkgs=()
  local bindir; bindir=$(pg_bindir || true)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/postgres" ]; then
    need_pkgs+=(postgresql)
  fi
  local sharedir=""
  if [ -n "$bindir" ] && [ -x "$bindir/pg_config" ]; then sharedir=$("$bindir/pg_config" --sharedir); fi
  if [ -z "$sharedir" ] && have pg_config; then sharedir=$(pg_config --sharedir); fi
  if ! ls "${sharedir:-/nonexistent}"/extension/pg_stat_statements.control >/dev/null 2>&1 \
     && ! ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1; then
    need_pkgs+=(postgresql-contrib)
  fi
  have prometheus || need_pkgs+=(prometheus)
  have redis-server || need_pkgs+=(redis-server)   # the caching section's Redis tests start their own
  have promtool || { [[ " ${need_pkgs[*]} " == *" prometheus "* ]] || need_pkgs+=(prometheus); }
  # VictoriaMetrics single node (the engine of Fly.io's managed Prometheus): demo --tsdb, tests/integration/test_victoriametrics.py
  have victoria-metrics || have victoria-metrics-prod || [ -n "${PERFBOOK_VICTORIAMETRICS:-}" ] || need_pkgs+=(victoria-metrics)
  # tests/integration/test_listen_alertmanager.py: the real Alertmanager posts to `perfbook listen`.
  have prometheus-alertmanager || have alertmanager || [ -n "${PERFBOOK_ALERTMANAGER:-}" ] || need_pkgs+=(prometheus-alertmanager)
  # tests/integration/test_browser.py opens every report page in it (PERFBOOK_CHROMIUM overrides).
  [ -x "${PERFBOOK_CHROMIUM:-/usr/bin/chromium}" ] || have chromium || need_pkgs+=(chromium)
  # tests/integration/test_node_service.py runs tests/nodesvc (express + prom-client + pg).
  { have node || have nodejs; } || need_pkgs+=(nodejs)
  have npm || need_pkgs+=(npm)
}

# Optional: hypopg, the third database privilege level (hypothetical indexes; `perfbook demo --db-role
# hypopg` and its test). Installed with apt on Debian as root when the server's package exists; never fatal.
optional_hypopg() {
  local bindir major
  bindir=$(pg_bindir || true)
  [ -n "$bindir" ] && [ -x "$bindir/postgres" ] || return 0
  major=$("$bindir/postgres" --version 2>/dev/null | sed -E 's/[^0-9]*([0-9]+).*/\1/')
  [ -n "$major" ] || return 0
  ls /usr/share/postgresql/"$major"/extension/hypopg.control >/dev/null 2>&1 && return 0
  if [ -r /etc/debian_version ] && [ "$(id -u)" = 0 ] && have apt-get; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-$major-hypopg" \
      >/dev/null 2>&1 || echo "perfbook: optional postgresql-$major-hypopg not installed (the hypopg level is skipped)"
  fi
}

system() {
  optional_hypopg
  check_system
  [ ${#need_pkgs[@]} -eq 0 ] && return 0
  if [ -r /etc/debian_version ] && [ "$(id -u)" = 0 ] && have apt-get; then
    echo "perfbook: installing system packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    check_system
    if [ ${#need_pkgs[@]} -gt 0 ]; then
      echo "perfbook: still missing after apt: ${need_pkgs[*]}" >&2; exit 1
    fi
    optional_hypopg
  else
    echo "perfbook: missing system packages: ${need_pkgs[*]}" >&2
    echo "  Debian/Ubuntu (as root): apt-get install ${need_pkgs[*]}" >&2
    echo "  macOS (Homebrew):        brew install postgresql@16 prometheus redis node; brew install --cask chromium" >&2
    echo "                           (then export PERFBOOK_CHROMIUM=/Applications/Chromium.app/Contents/MacOS/Chromium)" >&2
    echo "  conda:                   conda env create -f environment.yml (brings postgresql; add prometheus yourself)" >&2
    exit 1
  fi
}

venv() {
  local dir=$1 py=${PYTHON:-python3}
  if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ -r /etc/debian_version ] && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "perfbook: Python's venv module is missing: apt-get install python3-venv" >&2; exit 1
    fi
  fi
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -U pip >/dev/null
  echo "perfbook: installing Python dependencies into $dir (first run takes a minute)"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
}

npm_ci() {
  local dir=$1 stamp=$1/node_modules/.package-lock.json
  if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then return 0; fi
  have npm || { echo "perfbook: npm is missing: apt-get install nodejs npm" >&2; exit 1; }
  echo "perfbook: installing the Node.js test service's packages (npm ci in $dir)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

case "${1:-}" in
  system) system ;;
  venv) venv "${2:-.venv}" ;;
  npm) npm_ci "${2:?usage: tools/bootstrap.sh npm DIR}" ;;
  *) echo "usage: tools/bootstrap.sh system | venv DIR | npm DIR" >&2; exit 2 ;;
esac
