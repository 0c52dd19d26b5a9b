"""What the destination shows besides the recordings: day manifests (later: pages, webhook)."""
