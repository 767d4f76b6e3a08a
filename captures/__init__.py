"""privlens captures package."""
