"""Reading, recognising and checking a user's data."""
