# Sourced by setup_env.sh and setup_env312.sh: create a virtual environment once and install into it
# only when the files that define the install changed (a sha256 stamp inside the environment).

# venv_create VENV PYTHON: create VENV with PYTHON unless it exists.
venv_create() {
    if [ ! -x "$1/bin/python" ]; then
        echo "[setup] creating $1 with $2"
        "$2" -m venv "$1"
    fi
}

# venv_needs_install VENV FILE...: succeed when the FILEs differ from the last successful install
# into VENV (an install is due).
venv_needs_install() {
    local venv="$1"
    shift
    VENV_WANT="$(cat "$@" | sha256sum | cut -d' ' -f1)"
    [ ! -f "$venv/.setup-stamp" ] || [ "$(cat "$venv/.setup-stamp")" != "$VENV_WANT" ]
}

# venv_mark_installed VENV: record that the install venv_needs_install asked for succeeded.
venv_mark_installed() {
    echo "$VENV_WANT" > "$1/.setup-stamp"
}
