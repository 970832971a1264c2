"""Experiment 'default': see config.py."""
