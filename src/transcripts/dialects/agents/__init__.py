"""Oshara's enveloped dialect: ``{success, message, data, errors}``."""
