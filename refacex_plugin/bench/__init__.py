"""``refacex bench``: privacy, utility, recovery, robustness and speed on identity-labelled faces."""
