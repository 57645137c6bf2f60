"""The copier's wiring: builds the whole copier from its config (copier/tree.py)."""
