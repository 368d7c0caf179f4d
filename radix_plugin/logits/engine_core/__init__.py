"""The logits component in EngineCore: jump-forward drafts (grammar-forced tokens offered as
draft tokens) and the bitmask rows that make forced runs unrejectable."""
