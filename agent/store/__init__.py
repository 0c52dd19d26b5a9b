"""The state database: the single source of truth about every recording."""
