"""street-gateway: an edge gateway daemon for street sensors."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("street-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
