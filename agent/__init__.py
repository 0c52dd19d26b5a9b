"""recsync: ships finished FreePBX/Asterisk call recordings to a webserver."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recsync")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
