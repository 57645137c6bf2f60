"""The process shell: the command line, the operator commands, the paper demo and its live view."""

__version__ = "0.1.0"  # setup.cfg reads it from here
