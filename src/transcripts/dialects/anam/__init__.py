"""Anam AI's ``/v1`` sessions dialect."""
