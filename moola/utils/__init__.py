"""Utilities for the trainer side."""
