"""Command-line entry points (``tools/*.py`` and the ``detect-*`` console scripts)."""
