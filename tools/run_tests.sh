#!/usr/bin/env bash
# Run the whole suite (slow and multi-process tests included). pytest exits 5 when it collects
# no test: that is a failure here, never a silent pass.
#
# Two pytest-xdist workers, each taking whole test modules: most of a multi-process test's time
# is start-up (imports, Ray's processes, DeepSpeed's set-up) that leaves a core idle, so two at
# once finish the suite sooner on 2 cores (about 18 minutes on the project's 2-core machine).
# PYTEST_WORKERS=0 runs it in one process (what a debugger or `-s` wants).
set -uo pipefail
cd "$(dirname "$0")/.."
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
workers="${PYTEST_WORKERS:-2}"
parallel=()
if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadfile); fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
