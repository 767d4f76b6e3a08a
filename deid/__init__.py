"""privlens deid package."""
