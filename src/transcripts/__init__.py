"""transcripts: voice-session transcripts served in two public API dialects."""

__version__ = "0.1.0"
