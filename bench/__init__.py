"""The failsafe benchmark (`make bench`); bench/run.py is the entry point."""
