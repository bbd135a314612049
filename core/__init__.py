"""Shared kernel: app factory, configuration, database, auth, audit, errors, money."""
