"""The published, versioned fee schedule (收费标准公开)."""
