"""inventories package."""
