"""The auth service: users, server-side sessions, signing keys and short-lived access tokens."""
