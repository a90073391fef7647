"""Plateau's web service: the REST API, its database models and settings.

The API imports the engine only to validate requests and draw plots; jobs run
in the workers (``workers/``), which share the database layer (``app.db``).
"""
