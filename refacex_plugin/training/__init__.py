"""Training commands (``refacex train ...``): seeded, resumable, logged, with sample grids."""
