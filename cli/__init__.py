"""The ``plateau`` command line."""
