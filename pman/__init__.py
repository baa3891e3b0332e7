"""pman: run containerised jobs on whatever compute a site has."""

__version__ = "4.0.0"
