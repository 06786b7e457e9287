"""Operator tools: ``python -m ops ...`` (see :mod:`ops.cli`)."""
