"""qscheduler package."""
