"""Plumbing every step uses: atomic file output, folder locks, actionable errors, typed configs
from plain mappings, console progress."""
