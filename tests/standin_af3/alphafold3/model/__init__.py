"""Stand-in subpackage."""
