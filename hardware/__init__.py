"""privlens hardware package."""
