"""clm package."""
