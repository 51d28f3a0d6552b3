"""The rules of the service, one module per concern; every statement they need is a method
of a repository under ``transcripts.db``.

Functions take the unit of work (an ``AsyncSession``) and never commit: the caller (a
request, a CLI command, the demo) owns the transaction and commits once. A failure raises a
``TranscriptsError``, and the caller rolls the whole transaction back, so a refused request
leaves nothing behind.
"""
