"""The process shell: configuration, metrics, logging, the command line, the demo and its live view."""
