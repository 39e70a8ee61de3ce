"""Units' configuration: what a desired config may hold, and tag defaults merged in."""
