"""Database: the engine and sessions, every table's registration, and the migrations."""
