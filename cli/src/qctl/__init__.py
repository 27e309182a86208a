"""qctl package."""
