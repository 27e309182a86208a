"""qregistry package."""
