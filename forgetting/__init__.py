"""forgetting package."""
