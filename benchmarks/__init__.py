"""Benchmarks of fishertut against its peers (``make bench`` runs ``benchmarks/run.py``)."""
