"""Examples of using mark from an application (not installed with the package)."""
