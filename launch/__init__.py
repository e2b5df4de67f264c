"""The eigenmap command line and Ray orchestration (the top layer)."""
