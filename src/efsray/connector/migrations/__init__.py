"""Versioned SQL migrations (``NNNN_name.sql``), applied in order by
:mod:`efsray.connector.migrate`. Never edit a released file: add a new one."""
