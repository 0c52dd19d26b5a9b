"""The shipped copy: its name, tags and format."""
