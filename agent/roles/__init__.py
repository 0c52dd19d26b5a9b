"""The agent's roles, each a small class with a step of its own that a test drives alone
with made-up times; `agent.daemon.Agent` wires them and runs the two drivers."""
