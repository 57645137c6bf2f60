"""The copier's wiring: its config (config.py), the start-up checks of its accounts (accounts.py)
and the supervision tree that builds the whole copier from them (tree.py)."""
