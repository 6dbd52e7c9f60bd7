"""Commands of the ``medsr`` CLI kept in their own modules (registered in :mod:`medsr.cli`)."""
