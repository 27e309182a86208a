"""qshared package."""
