"""Measurements behind the docs, outside the product packages: `python -m experiments.<name>`; each states its
measured conclusion at the top."""
