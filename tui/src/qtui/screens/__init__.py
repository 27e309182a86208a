"""qtui screens: one a file."""
