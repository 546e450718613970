# Shared by scripts/run and scripts/test: find Python 3.12+, build .venv, find or start PostgreSQL.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in python3.12 python3.13 python3 "$(pyenv root 2>/dev/null)/versions/3.12"*/bin/python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Create .venv and install the project with its dev extra; skipped when pyproject.toml is unchanged.
ensure_venv() {
    local python stamp want
    if [ ! -x "$PY" ]; then
        python="$(find_python)" || die "Python 3.12 or newer is needed (tried python3.12, python3.13, python3, pyenv's 3.12)"
        say "creating virtualenv with $("$python" --version)"
        "$python" -m venv "$VENV"
    fi
    stamp="$VENV/.installed"
    want="$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing flowplatform and its dependencies"
        "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
        echo "$want" > "$stamp"
    fi
}

pg_answers() {  # $1 = postgres URL
    "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PYEOF
}

find_pg_bin() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
    done
    return 1
}

# Sets PG_URL: $DATABASE_URL if it is PostgreSQL, else 127.0.0.1:5432 as postgres, else a
# throwaway cluster started here (stopped when the calling script exits).
ensure_postgres() {
    case "${DATABASE_URL:-}" in
        postgres://*|postgresql://*)
            pg_answers "$DATABASE_URL" || die "DATABASE_URL=$DATABASE_URL does not answer"
            PG_URL="$DATABASE_URL"; return 0 ;;
    esac
    PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
    if pg_answers "$PG_URL"; then return 0; fi
    local bin port dir runas=()
    bin="$(find_pg_bin)" || die "PostgreSQL is needed for the tests and none answers on 127.0.0.1:5432. Set DATABASE_URL=postgres://user@host:port/db, or install PostgreSQL (apt-get install postgresql) so a throwaway cluster can be started."
    port=55432
    dir="$(mktemp -d /tmp/flowplatform-pg.XXXXXX)"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to own a throwaway cluster"
        chown postgres "$dir"
        runas=(runuser -u postgres --)
    fi
    say "no PostgreSQL on 127.0.0.1:5432; starting a throwaway cluster on port $port ($bin)"
    "${runas[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
    "${runas[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null \
        || die "could not start PostgreSQL; see $dir/log"
    PG_STOP=("${runas[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
    trap '"${PG_STOP[@]}" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    pg_answers "$PG_URL" || die "the throwaway PostgreSQL cluster does not answer; see $dir/log"
}
