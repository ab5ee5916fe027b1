"""Dagster resources: thin wrappers that build engine objects from config."""
