"""Runnable multi-hospital scenarios and the ``fedcare`` command line."""
