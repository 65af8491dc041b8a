"""tankwatch: streaming forecaster for tank-farm sensors.

This package holds what every part shares: the exception tree, the message codec
and its JSON schema, topic names, the embedded broker and the CLI entry point.
The stages of the data flow live in ``producers``, ``pipeline`` and ``models``.
"""

__version__ = "0.1.0"
