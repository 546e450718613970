"""Tenancy: organizations, their API keys, and authenticating requests as one of them."""
