"""Units: enrollment, presence, and retention of what they reported."""
