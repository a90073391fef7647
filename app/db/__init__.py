"""The database: typed SQLAlchemy models, engines and sessions, migrations."""
