"""privlens optics package."""
