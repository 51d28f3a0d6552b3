"""The two public API dialects. Each is an edge adapter around the shared repository:
its routes, a pure mapping from domain objects to its JSON, and its own error body."""
