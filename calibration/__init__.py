"""privlens calibration package."""
