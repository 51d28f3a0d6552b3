"""Database: tables, engine and the scoped queries."""
