#!/usr/bin/env bash
# Run the whole suite (slow and multi-process tests included). pytest exits 5 when it collects
# no test: that is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
