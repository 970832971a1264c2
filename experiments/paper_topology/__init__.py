"""Experiment 'paper_topology': see config.py."""
