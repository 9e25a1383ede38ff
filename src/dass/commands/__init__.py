"""Sub-commands of the ``dass`` CLI, one module each (discovered automatically by :mod:`dass.cli`)."""
