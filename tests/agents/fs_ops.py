"""The file tests' agent: the same runner as exec_ops.py (SDK calls and local file actions from
JSON in argv[1], one REPORT line, then it waits)."""

from exec_ops import main

main()
