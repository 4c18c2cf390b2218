#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image; the zip is
# unpacked in /autograder/source (https://gradescope-autograders.readthedocs.io/en/latest/specs/).
# Written by `python check.py --autograder gradescope --output autograder.zip`.
#
#   bash setup.sh [STEP ...]     the steps, all by default, in this order:
#     system        apt: bubblewrap (the strongest sandbox, where the container lets it
#                   start), pip, and Python 3.11 if the image's python3 is older
#     python        the Python that grades: the image's python3 if it is 3.11 or newer,
#                   else a virtual environment of Ubuntu's python3.11 in /opt/vae-grader;
#                   its path goes to source/.python, which run_autograder reads
#     requirements  pip installs requirements-autograder.txt (the pinned packages)
#     permissions   for the grader's fallback sandbox, where bubblewrap cannot start (Docker's
#                   default seccomp profile forbids its namespaces): each worker runs as a
#                   uid of its own (claimed when grading; no account is made), so the source
#                   folder, which holds the reference solution, is made private to root and
#                   the Python installation readable and runnable by every user
#
#   AUTOGRADER_ROOT    the root laid out as /autograder (default /autograder)
#   AUTOGRADER_PYTHON  the Python to install into and grade with (skips the choice above)
set -euo pipefail
umask 022
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(system python requirements permissions)

new_enough() {  # the grader needs Python 3.11 or newer (tomllib)
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

step_system() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q bubblewrap python3 python3-pip python3-venv
  if [ -z "${AUTOGRADER_PYTHON:-}" ] && ! new_enough python3; then
    apt-get install -y -q python3.11 python3.11-venv     # Ubuntu 22.04: python3 is 3.10
  fi
}

step_python() {
  local py
  if [ -n "${AUTOGRADER_PYTHON:-}" ]; then
    py="$AUTOGRADER_PYTHON"
  elif new_enough python3; then
    py="$(command -v python3)"
  else
    python3.11 -m venv /opt/vae-grader
    py=/opt/vae-grader/bin/python
  fi
  if ! new_enough "$py"; then
    echo "setup.sh: $py is not Python 3.11 or newer; the grader needs it" >&2
    exit 1
  fi
  echo "$py" > "$SOURCE/.python"
  echo "setup.sh: grading with $py ($("$py" --version 2>&1))"
}

grading_python() {
  if [ ! -s "$SOURCE/.python" ]; then
    echo "setup.sh: run the python step first (no $SOURCE/.python)" >&2
    exit 1
  fi
  cat "$SOURCE/.python"
}

step_requirements() {
  local py
  py="$(grading_python)"
  # PIP_BREAK_SYSTEM_PACKAGES: the image is the grader's alone (Ubuntu 24.04 marks its Python
  # as managed by apt); older pips ignore it.
  PIP_BREAK_SYSTEM_PACKAGES=1 "$py" -m pip install --disable-pip-version-check --no-cache-dir \
    -r "$SOURCE/requirements-autograder.txt"
  "$py" -c "import autograd, numpy, scipy, matplotlib, jsonschema"
  (cd "$SOURCE" && "$py" check.py --help > /dev/null)
}

step_permissions() {
  local py folder closed
  py="$(grading_python)"
  chmod 700 "$SOURCE"
  for folder in $("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib")); print(sysconfig.get_path("platlib"))' | sort -u); do
    # only what lacks them: files readable by all, folders enterable by all
    [ -d "$folder" ] && find "$folder" \( ! -perm -0444 -o \( -type d ! -perm -0111 \) \) \
      -exec chmod a+rX {} +
  done
  closed="$(cd "$SOURCE" && "$py" -c 'from grader.isolation import closed_folders; print(" ".join(closed_folders()))')"
  if [ -n "$closed" ]; then
    echo "setup.sh: warning: other users cannot enter $closed: the fallback sandbox needs" \
         "them open (chmod o+x) to run this Python" >&2
  fi
}

for step in "${STEPS[@]}"; do
  case "$step" in
    system|python|requirements|permissions) "step_$step" ;;
    *) echo "setup.sh: no step $step (system, python, requirements, permissions)" >&2; exit 2 ;;
  esac
done
