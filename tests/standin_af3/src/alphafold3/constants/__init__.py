"""Stand-in of AF3's constants package."""
