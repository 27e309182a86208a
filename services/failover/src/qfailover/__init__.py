"""qfailover: notices dead workers and puts their jobs back."""
