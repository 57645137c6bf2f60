"""The process shell: configuration, metrics, logging, the command line, the demo and its live view."""

__version__ = "0.1.0"  # setup.cfg reads it from here
