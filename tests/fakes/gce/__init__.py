"""A stateful Compute Engine API on 127.0.0.1, held to Google's Compute v1 discovery document."""
