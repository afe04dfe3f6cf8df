"""Evaluation: the predictions CSV, the ICBHI metrics with bootstrap intervals, scoring of every
run of an architecture for DVC, and the figures."""
