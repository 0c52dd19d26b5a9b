"""recsync: ships finished FreePBX/Asterisk call recordings to a webserver."""

# pyproject.toml's version, written out (tests/test_footprint.py checks that they agree):
# looking it up with importlib.metadata would cost every command 15 ms of imports.
__version__ = "0.1.0"
