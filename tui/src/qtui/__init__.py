"""qtui: the Textual dashboard of a qstack system."""
