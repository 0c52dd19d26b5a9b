"""`python -m tests.support.otherhost HOST ARGS...`: the recsync CLI as if on the machine
HOST (socket.gethostname answers it): a second PBX, for the ownership tests, on one box."""

from __future__ import annotations

import socket
import sys

from agent.cli import main

if __name__ == "__main__":
    host = sys.argv.pop(1)
    socket.gethostname = lambda: host  # what status.json says, and the owner check compares
    main()
