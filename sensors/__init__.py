"""Sensors: change detection, audit files, run notifications."""
